//! zenrelay
pub fn placeholder() {}
