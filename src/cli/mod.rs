//! Command-line tools beside `serve`: submit, gen.
pub mod gen;
pub mod submit;
