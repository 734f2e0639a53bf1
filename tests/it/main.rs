mod conformance;
mod relay;
mod sim;
mod support;
