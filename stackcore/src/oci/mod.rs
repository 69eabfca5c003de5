//! OCI image layouts: the JSON types and the store.

pub mod maint;
pub mod mark;
pub mod store;
pub mod types;

pub use store::{Store, default_store_path};
pub use types::{Descriptor, ImageConfig, Index, Manifest, media};
