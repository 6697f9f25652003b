//! Reading inputs: where records begin and end in CSV, JSON Lines and JSON ([`decode`]), the
//! streaming scan that cuts inputs into chunks ([`plan`]), and where a gzip or zstd input can
//! be entered mid-stream ([`resume_points`]), and whether an input has the declared shape
//! ([`shape`]), shared by the planner, the workers, the stream,
//! `produce` and `init`.

pub mod decode;
pub mod plan;
pub mod resume_points;
pub mod shape;
