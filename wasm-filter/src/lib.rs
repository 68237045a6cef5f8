//! The gateway's proxy-wasm filter. Its logic arrives with the filter issue; this crate holds its
//! place in the workspace so the layout is fixed from the start.
