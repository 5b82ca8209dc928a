//! gRPC calls: recognised by their content type, labelled by their method and gRPC status.
//!
//! A gRPC call is an HTTP/2 `POST` to `/package.Service/Method` with a `content-type` of
//! `application/grpc` (or `application/grpc+proto`, `application/grpc;…`). Its HTTP status is
//! 200 whatever happened; its outcome is the `grpc-status` of its trailers (or of its headers,
//! for a call answered without a body). An adapter that sees a gRPC call
//! ([`is_grpc`]) starts it under its path (the gRPC method, whatever route served it) and
//! marks it with [`RequestTracker::set_grpc`](super::RequestTracker::set_grpc); once the status
//! arrives it calls [`RequestTracker::set_grpc_status`](super::RequestTracker::set_grpc_status).
//! Then:
//!
//! - `status` is the code's name, as gRPC's own tools spell it (`OK`, `NOT_FOUND`, `INTERNAL`):
//!   never a number, so that a dashboard's `status=~"5.."` does not mix the two kinds;
//! - the codes that gRPC maps to HTTP 5xx (`UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`,
//!   `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`) count as failed, with `error_type="grpc_server_error"`;
//! - a call the client cancelled (dropped before its status) is `CANCELLED`, and counted as a
//!   client disconnect;
//! - `UNIMPLEMENTED` calls are recorded under `endpoint="<unmatched>"`: a client sending made-up
//!   method names does not create a series per name.
//!
//! ```
//! use gpe_core::http::grpc::{is_grpc, GrpcCode};
//!
//! assert!(is_grpc(b"application/grpc"));
//! assert!(is_grpc(b"application/grpc+proto"));
//! assert!(!is_grpc(b"application/grpc-web"));
//! assert_eq!(GrpcCode::from_header(b"5"), GrpcCode::NotFound);
//! assert_eq!(GrpcCode::NotFound.as_str(), "NOT_FOUND");
//! assert_eq!(GrpcCode::from_header(b"99"), GrpcCode::Unknown); // as gRPC reads an unknown code
//! ```

use std::fmt;

/// Whether a `content-type` value is gRPC's: `application/grpc`, alone or followed by `+` (a
/// codec) or `;` (parameters). gRPC-Web (`application/grpc-web…`) is not: it is answered over
/// HTTP/1 with its status in the body.
pub fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type.len() >= GRPC.len()
        && content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(content_type.get(GRPC.len()), None | Some(b'+' | b';'))
}

macro_rules! codes {
    ($($code:literal $variant:ident $name:literal,)*) => {
        /// A gRPC status code (`grpc-status`), as in gRPC's `status.proto`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum GrpcCode {
            $(
                #[doc = concat!("`", $name, "` (", $code, ").")]
                $variant = $code,
            )*
        }

        impl GrpcCode {
            /// The code of a number; a number gRPC does not define reads as
            /// [`Unknown`](GrpcCode::Unknown), as gRPC's clients read it.
            pub fn from_code(code: u32) -> GrpcCode {
                match code {
                    $($code => GrpcCode::$variant,)*
                    _ => GrpcCode::Unknown,
                }
            }

            /// The name gRPC gives the code, the `status` label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(GrpcCode::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    0 Ok "OK",
    1 Cancelled "CANCELLED",
    2 Unknown "UNKNOWN",
    3 InvalidArgument "INVALID_ARGUMENT",
    4 DeadlineExceeded "DEADLINE_EXCEEDED",
    5 NotFound "NOT_FOUND",
    6 AlreadyExists "ALREADY_EXISTS",
    7 PermissionDenied "PERMISSION_DENIED",
    8 ResourceExhausted "RESOURCE_EXHAUSTED",
    9 FailedPrecondition "FAILED_PRECONDITION",
    10 Aborted "ABORTED",
    11 OutOfRange "OUT_OF_RANGE",
    12 Unimplemented "UNIMPLEMENTED",
    13 Internal "INTERNAL",
    14 Unavailable "UNAVAILABLE",
    15 DataLoss "DATA_LOSS",
    16 Unauthenticated "UNAUTHENTICATED",
}

impl GrpcCode {
    /// The code of a `grpc-status` header or trailer value (ASCII digits); anything else reads as
    /// [`Unknown`](GrpcCode::Unknown).
    pub fn from_header(value: &[u8]) -> GrpcCode {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map_or(GrpcCode::Unknown, GrpcCode::from_code)
    }

    /// Whether the server is at fault: the codes gRPC maps to an HTTP 5xx (`UNKNOWN`,
    /// `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`).
    pub fn is_server_error(self) -> bool {
        matches!(
            self,
            GrpcCode::Unknown
                | GrpcCode::DeadlineExceeded
                | GrpcCode::Unimplemented
                | GrpcCode::Internal
                | GrpcCode::Unavailable
                | GrpcCode::DataLoss
        )
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where gRPC codes sit among the tracker's `u16` statuses: above every HTTP status.
const STATUS_BASE: u16 = 1000;

/// The tracker's status of a gRPC code.
pub(super) fn status_of(code: GrpcCode) -> u16 {
    STATUS_BASE + code as u16
}

/// The gRPC code of a tracker's status, if it holds one.
pub(super) fn code_of(status: u16) -> Option<GrpcCode> {
    status
        .checked_sub(STATUS_BASE)
        .filter(|c| *c <= 16)
        .map(|c| GrpcCode::from_code(c.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let cases: [(&[u8], bool); 11] = [
            (b"application/grpc", true),
            (b"application/grpc+proto", true),
            (b"application/grpc+json", true),
            (b"application/grpc; charset=utf-8", true),
            (b"Application/GRPC", true),
            (b"", false),
            (b"application/grp", false),
            (b"application/grpc-web", false),
            (b"application/grpc-web+proto", false),
            (b"application/json", false),
            (b"text/plain", false),
        ];
        for (content_type, grpc) in cases {
            let shown = String::from_utf8_lossy(content_type);
            assert_eq!(is_grpc(content_type), grpc, "{shown:?}");
        }
    }

    #[test]
    fn codes_round_trip_through_the_status() {
        for n in 0..=16u32 {
            let code = GrpcCode::from_code(n);
            assert_eq!(code as u32, n);
            assert_eq!(code_of(status_of(code)), Some(code));
            assert_eq!(GrpcCode::from_header(n.to_string().as_bytes()), code);
        }
        assert_eq!(code_of(200), None);
        assert_eq!(code_of(499), None);
        assert_eq!(code_of(STATUS_BASE + 17), None);
        for bad in [&b""[..], b"x", b"-1", b"17", b"4294967296"] {
            assert_eq!(GrpcCode::from_header(bad), GrpcCode::Unknown);
        }
    }

    #[test]
    fn server_errors_are_the_codes_mapped_to_5xx() {
        let server: Vec<_> = (0..=16)
            .map(GrpcCode::from_code)
            .filter(|c| c.is_server_error())
            .map(GrpcCode::as_str)
            .collect();
        assert_eq!(
            server,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
    }
}
