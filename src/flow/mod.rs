//! The flow language: YAML files, their validation into a graph, and the
//! pure interpreter that runs a call through it.

pub mod analysis;
pub mod compile;
pub mod condition;
pub mod dialling;
pub mod duration;
pub mod graph;
pub mod interpreter;
pub mod load;
pub mod model;
pub mod numbers;
pub mod position;
pub mod render;
pub mod schedule;
pub mod schema;
pub mod speak;
pub mod template;

pub use graph::{FlowSet, NodeRef, PromptId};
pub use load::{load_paths, load_sources, LoadOptions, Loaded};
