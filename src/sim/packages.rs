//! Package validation.
