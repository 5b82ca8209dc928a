//! Label hooks: how a request's `endpoint` label is chosen.
//!
//! A hook is a type implementing [`EndpointLabel`]; it is implemented for `()` (every request is
//! `<unmatched>`), for closures `Fn(&RequestInfo<'_>) -> Option<String>`, and for
//! [`DefaultEndpoint`] (the route template). A framework adapter takes one (gpe-tower's
//! `MetricsLayer::endpoint_label`, gpe-actix's `ActixMetrics::endpoint_label`):
//!
//! ```
//! use gpe_core::http::{EndpointLabel, RequestInfo};
//!
//! // The route template when routing matched, else the first path segment of known prefixes.
//! let hook = |req: &RequestInfo<'_>| {
//!     req.route.map(str::to_owned).or_else(|| {
//!         req.path.starts_with("/assets/").then(|| "/assets/*".to_owned())
//!     })
//! };
//! let label = |route, path| hook.endpoint(&RequestInfo::new("GET", path, route)).map(|l| l.into_owned());
//! assert_eq!(label(Some("/users/{id}"), "/users/7").as_deref(), Some("/users/{id}"));
//! assert_eq!(label(None, "/assets/app.js").as_deref(), Some("/assets/*"));
//! assert_eq!(label(None, "/nowhere"), None); // recorded as `<unmatched>`
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
