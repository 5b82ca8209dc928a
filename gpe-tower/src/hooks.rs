//! Label hooks: how a request's `endpoint` label is chosen.
//!
//! A hook is a type implementing [`EndpointLabel`]; it is implemented for `()` (every request is
//! `<unmatched>`), for closures `Fn(&RequestInfo<'_>) -> Option<String>`, and for
//! [`DefaultEndpoint`] (the route template). Swap it with
//! [`MetricsLayer::endpoint_label`](crate::MetricsLayer::endpoint_label):
//!
//! ```
//! use gpe_tower::{MetricsLayer, RequestInfo};
//! # fn main() -> Result<(), gpe_tower::BuildError> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let store = gpe_core::Store::open(dir.path())?;
//! # let metrics = gpe_tower::RequestMetrics::builder().build(&store)?;
//! // The route template when routing matched, else the first path segment of known prefixes.
//! let layer = MetricsLayer::new(metrics).endpoint_label(|req: &RequestInfo<'_>| {
//!     req.route.map(str::to_owned).or_else(|| {
//!         req.path.starts_with("/assets/").then(|| "/assets/*".to_owned())
//!     })
//! });
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! Whatever a hook returns, the per-family series cap still applies: a hook returning raw paths
//! ends in `<overflow>` rather than in unbounded memory.

use std::borrow::Cow;

/// What a label hook sees of a request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The request method (`GET`, ...).
    pub method: &'a str,
    /// The request path, without the query string.
    pub path: &'a str,
    /// The matched route template (axum `MatchedPath`, actix `match_pattern()`), if any.
    pub route: Option<&'a str>,
}

impl<'a> RequestInfo<'a> {
    /// A request view (for framework adapters and tests).
    pub fn new(method: &'a str, path: &'a str, route: Option<&'a str>) -> Self {
        RequestInfo {
            method,
            path,
            route,
        }
    }
}

/// Chooses the `endpoint` label of a request. `None` means `<unmatched>`.
///
/// Keep the set of values small and fixed: they become series.
pub trait EndpointLabel {
    /// The endpoint label for `req`.
    fn endpoint<'a>(&self, req: &RequestInfo<'a>) -> Option<Cow<'a, str>>;
}

/// The route template when routing matched, else `<unmatched>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultEndpoint;

impl EndpointLabel for DefaultEndpoint {
    #[inline]
    fn endpoint<'a>(&self, req: &RequestInfo<'a>) -> Option<Cow<'a, str>> {
        req.route.map(Cow::Borrowed)
    }
}

/// Every request is `<unmatched>`: no per-endpoint series at all.
impl EndpointLabel for () {
    #[inline]
    fn endpoint<'a>(&self, _: &RequestInfo<'a>) -> Option<Cow<'a, str>> {
        None
    }
}

impl<F> EndpointLabel for F
where
    F: Fn(&RequestInfo<'_>) -> Option<String>,
{
    fn endpoint<'a>(&self, req: &RequestInfo<'a>) -> Option<Cow<'a, str>> {
        self(req).map(Cow::Owned)
    }
}
