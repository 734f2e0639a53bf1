mod conformance;
mod demo;
mod ops;
mod proxy;
mod relay;
mod sim;
mod support;
mod webhooks;
