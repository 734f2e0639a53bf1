mod relay;
mod sim;
mod support;
