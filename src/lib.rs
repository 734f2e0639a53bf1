//! zenrelay: a notification relay gateway for the Zendesk Apps API.

pub mod sim;
