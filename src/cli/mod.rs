//! Command-line tools beside `serve`: submit, gen, and the operator commands.
pub mod gen;
pub mod ops;
pub mod submit;
