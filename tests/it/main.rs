mod conformance;
mod demo;
mod relay;
mod sim;
mod support;
