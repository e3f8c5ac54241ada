//! Trusted networks ([`Cidr`]): parsed by the shared [`bulkhead_proxy_io::cidr`], so the edge and
//! the tenant router decide who may send a PROXY header with one mechanism.

pub use bulkhead_proxy_io::cidr::{any_contains, Cidr, CidrError};
