mod conformance;
mod demo;
mod ops;
mod relay;
mod sim;
mod support;
mod webhooks;
