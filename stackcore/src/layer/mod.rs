//! Layers: compression, reading verified streams, indexes, and the overlay model.

mod cache;
pub mod compress;
pub mod index;
mod inflate;
pub mod model;
mod par;
pub mod points;
pub mod read;
pub mod write;

pub use compress::{Compression, Compressor};
pub use index::{Change, LayerIndex};
pub use model::Model;
