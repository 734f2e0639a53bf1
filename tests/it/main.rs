mod proxy;
mod relay;
mod sim;
mod support;
