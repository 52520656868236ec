//! The data path of Payment Guard: a pingora `ProxyHttp` that authenticates an agent, reads and
//! classifies its Stripe request, decides in one durable store transaction, then answers
//! (deny, hold, replay) or forwards to Stripe with the organization's key, and settles.

mod auth;
mod drain;
mod errors;
mod executor;
mod forward;
mod service;
mod upstream;
mod view;

pub use drain::{InFlight, InFlightGuard};
pub use errors::GuardError;
pub use executor::{Executor, expire_holds_loop};
pub use forward::{Forwarder, Outbound};
pub use service::{Ctx, Guard, ProxySettings};
pub use upstream::Upstream;
