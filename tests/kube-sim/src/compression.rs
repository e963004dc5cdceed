//! Response compression (`Content-Encoding: gzip`) as kube-apiserver does it, per version.
//!
//! Two mechanisms compress responses in a kube-apiserver, and nothing else does:
//!
//! - **The API response writer.** Every API object the apiserver writes goes through
//!   `responsewriters.WriteObjectNegotiated` → `SerializeObject`, whose `deferredResponseWriter`
//!   gzips when `negotiateContentEncoding` found `gzip` in `Accept-Encoding` (and the
//!   `APIResponseCompression` gate is on) and the body is over 128 KiB
//!   (apiserver@kubernetes-1.16.0 pkg/endpoints/handlers/responsewriters/writers.go:88-95,
//!   145-201; unchanged in substance through apiserver@kubernetes-1.35.0). That covers gets,
//!   lists, the answers to writes, Tables, PartialObjectMetadata(List), `Status` errors
//!   (`ErrorNegotiated` calls `WriteObjectNegotiated`, 1.33.0 writers.go:395) and discovery
//!   (`/api`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`, aggregated discovery: 1.33.0
//!   pkg/endpoints/discovery/legacy.go:79, root.go:140, group.go:72, version.go:81,
//!   aggregated/etag.go:66).
//! - **kube-openapi's `/openapi/v2` handler**, wrapped in NYTimes/gziphandler (see
//!   [`KubeVersion::openapi_v2_gzip_min_size`]): independent of the gate.
//!
//! Never compressed: watch streams (`WatchServer.HandleHTTP` writes frames straight to the
//! `http.ResponseWriter`, 1.33.0 pkg/endpoints/handlers/watch.go:230,244-247; kube-rs 5 says
//! only Kubernetes ≥ 1.37 gzips them), `/version` (`WriteRawJSON`, 1.33.0
//! pkg/server/routes/version.go:56), `/openapi/v3` (kube-openapi's `handler3`, installed at
//! 1.33.0 pkg/server/routes/openapi.go:54, has no gzip wrapper: kube-openapi@c8a335a9a2ff
//! pkg/handler3/handler.go), health checks.
//!
//! What the sim does not reproduce: the bytes. Go's `compress/flate` and flate2 (miniz_oxide)
//! at the same level make streams of slightly different sizes, and the threshold is compared
//! with the sim's own body (kube-apiserver's JSON encoder ends a body with a newline, the sim's
//! does not). 1.14–1.15's alpha compression filter (gzip or deflate, any size,
//! apiserver@kubernetes-1.14.0 pkg/server/filters/compression.go:49-96) is off by default and
//! not modelled: the gate lever only turns compression off.

use std::io::Write as _;

use crate::version::KubeVersion;

/// `defaultGzipThresholdBytes`: a body must be larger than this to be gzipped by the API
/// response writer (apiserver@kubernetes-1.16.0 pkg/endpoints/handlers/responsewriters/writers.go:139;
/// 1.33.0 :159).
pub const THRESHOLD: usize = 128 * 1024;

/// Go's `gzip.DefaultCompression` as `compress/flate` applies it (level 6): what
/// `gziphandler.GzipHandler` uses (NYTimes/gziphandler@v1.1.1 gzip.go:308;
/// @56545f4a5d46 gzip.go:265 `NewGzipLevelHandler(gzip.DefaultCompression)`).
pub const GO_DEFAULT_LEVEL: u32 = 6;

/// Which of the apiserver's writers produces a response; it decides whether and how the
/// response may be compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// `responsewriters.SerializeObject`'s `deferredResponseWriter`: API objects, discovery,
    /// `Status` errors.
    Negotiated,
    /// kube-openapi's `/openapi/v2` handler inside `gziphandler.GzipHandler`.
    OpenApiV2,
    /// Written as is: watch streams, `/version`, `/openapi/v3`, health checks.
    Raw,
}

impl Writer {
    /// The writer of a response to `path` with HTTP `status` (`watch`: a GET with `watch=true`).
    /// The authentication/authorization filters answer errors through `responsewriters` before
    /// any handler runs, so a non-200 answer on a raw or OpenAPI path is `Negotiated`.
    pub fn of(path: &str, watch: bool, status: u16) -> Writer {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if watch {
            return Writer::Raw;
        }
        if status != 200 {
            return Writer::Negotiated;
        }
        match segs.as_slice() {
            ["openapi", "v2"] => Writer::OpenApiV2,
            ["version"] | ["openapi", ..] => Writer::Raw,
            [first, ..] if matches!(*first, "healthz" | "livez" | "readyz") => Writer::Raw,
            _ => Writer::Negotiated,
        }
    }
}

/// How the server puts one response body on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Identity,
    /// `Content-Encoding: gzip` at this level.
    Gzip {
        /// The flate level (Go's `compress/flate` numbering, which flate2's matches).
        level: u32,
    },
}

impl Encoding {
    /// The `Content-Encoding` value ("" for identity), as the request log writes it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Gzip { .. } => "gzip",
        }
    }
}

/// Decides the encoding of one response.
///
/// `accept_encoding` is the request's first `Accept-Encoding` header (Go's `Header.Get`),
/// `gate` whether `APIResponseCompression` is on (the version's default, unless the lever
/// turned it off), `body_len` the uncompressed body's size.
pub fn choose(
    writer: Writer,
    accept_encoding: Option<&str>,
    version: KubeVersion,
    gate: bool,
    body_len: usize,
) -> Encoding {
    let accept_encoding = accept_encoding.unwrap_or("");
    let level = match writer {
        Writer::Raw => None,
        // `case w.contentEncoding == "gzip" && len(p) > defaultGzipThresholdBytes`: the first
        // write of the encoder is the whole body for the JSON serializer (apiserver@kubernetes-1.16.0
        // writers.go:189); from 1.33 a streamed list's small writes are buffered until they
        // pass the threshold or the body ends (1.33.0 writers.go:211-246, 262), so the same
        // rule holds on the body's total size.
        Writer::Negotiated => {
            (gate && apiserver_negotiates_gzip(accept_encoding) && body_len > THRESHOLD)
                .then(|| version.gzip_level())
        }
        // gziphandler buffers until `minSize` (2017 revision: `len(w.buf) >= w.minSize`,
        // @56545f4a5d46 gzip.go:104) or trusts the `Content-Length` `http.ServeContent` sets
        // (`cl >= w.minSize || len(w.buf) >= w.minSize`, v1.1.1 gzip.go:127): either way a body
        // of at least `minSize` bytes.
        Writer::OpenApiV2 => (gziphandler_accepts_gzip(accept_encoding)
            && body_len >= version.openapi_v2_gzip_min_size())
        .then_some(GO_DEFAULT_LEVEL),
    };
    level.map_or(Encoding::Identity, |level| Encoding::Gzip { level })
}

/// `negotiateContentEncoding`'s test of `Accept-Encoding`: the header is split on `,`, each
/// token trimmed of spaces and compared with `gzip` exactly — no q-values (`gzip;q=1` does not
/// match, `gzip;q=0` does not refuse), case-sensitive
/// (apiserver@kubernetes-1.16.0 pkg/endpoints/handlers/responsewriters/writers.go:145-168;
/// 1.33.0 :168-191).
pub fn apiserver_negotiates_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|t| t.trim() == "gzip")
}

/// gziphandler's `acceptsGzip`: `parseEncodings` maps each `,`-separated coding (lowercased)
/// to its q-value (default 1, clamped to 0..=1; a coding with an unparsable q-value or an
/// empty name is dropped; a later entry for the same coding wins), and `gzip` must have
/// q > 0. `parseCoding` resets the q-value to 1 before every `;` part, so only a `q=` in the
/// last part counts (NYTimes/gziphandler@v1.1.1 gzip.go:450-453,483-532; the same code at
/// @56545f4a5d46 gzip.go:271-274,283-332).
pub fn gziphandler_accepts_gzip(accept_encoding: &str) -> bool {
    let mut gzip_q: Option<f64> = None;
    for coding in accept_encoding.split(',') {
        let mut name = String::new();
        let mut q = 1.0_f64;
        let mut bad = false;
        for (n, part) in coding.split(';').enumerate() {
            let part = part.trim();
            q = 1.0;
            if n == 0 {
                name = part.to_lowercase();
            } else if let Some(v) = part.strip_prefix("q=") {
                if let Ok(v) = v.parse::<f64>() {
                    q = v.clamp(0.0, 1.0);
                } else {
                    bad = true;
                    q = 0.0;
                }
            }
        }
        if name.is_empty() {
            bad = true;
        }
        if !bad && name == "gzip" {
            gzip_q = Some(q);
        }
    }
    gzip_q.is_some_and(|q| q > 0.0)
}

/// Gzips `body` at `level` (a gzip member with mtime 0 and no name, as Go's `gzip.Writer`
/// writes it; flate2 sets the XFL byte from the level as Go does).
pub fn gzip(body: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::new(level),
    );
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// Parses a `--feature-gates` value. The only gate kube-sim models is
/// `APIResponseCompression`, and only turning it off: it is on by default from 1.16, and the
/// alpha filter 1.14–1.15 would enable is not modelled. Returns whether compression stays on.
pub fn parse_feature_gates(s: &str) -> Result<bool, String> {
    let mut on = true;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match (key.trim(), value.trim()) {
            ("APIResponseCompression", "false") => on = false,
            ("APIResponseCompression", "true") => {
                return Err(format!(
                    "--feature-gates {part:?}: APIResponseCompression is already on by default from Kubernetes 1.16, and kube-sim does not model the alpha compression of 1.14–1.15; only APIResponseCompression=false can be given"
                ));
            }
            ("APIResponseCompression", other) => {
                return Err(format!(
                    "--feature-gates {part:?}: value {other:?} is not true or false; give APIResponseCompression=false"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "--feature-gates {other:?} is not a gate kube-sim models: only APIResponseCompression=false can be given"
                ));
            }
        }
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn apiserver_accept_encoding_is_an_exact_token() {
        for yes in [
            "gzip",
            "gzip, deflate",
            "deflate,gzip",
            " br , gzip ",
            "deflate, gzip, br, zstd",
        ] {
            assert!(apiserver_negotiates_gzip(yes), "{yes:?}");
        }
        for no in [
            "",
            "identity",
            "GZIP",
            "gzip;q=1.0",
            "x-gzip",
            "deflate, br",
        ] {
            assert!(!apiserver_negotiates_gzip(no), "{no:?}");
        }
        // No q-values: a refusal by q=0 is not read either way (it does not match "gzip").
        assert!(!apiserver_negotiates_gzip("gzip;q=0"));
    }

    #[test]
    fn gziphandler_reads_q_values() {
        for yes in [
            "gzip",
            "GZIP",
            "gzip;q=0.5",
            "deflate, gzip;q=1",
            "gzip;q=0;level=1",
        ] {
            assert!(gziphandler_accepts_gzip(yes), "{yes:?}");
        }
        for no in [
            "",
            "identity",
            "gzip;q=0",
            "gzip;q=x",
            "gzip, gzip;q=0",
            "*",
        ] {
            assert!(!gziphandler_accepts_gzip(no), "{no:?}");
        }
    }

    #[test]
    fn negotiated_bodies_over_128_kib_by_version() {
        let big = THRESHOLD + 1;
        let ae = Some("gzip");
        assert_eq!(
            choose(
                Writer::Negotiated,
                ae,
                v("1.14"),
                v("1.14").response_compression(),
                big
            ),
            Encoding::Identity
        );
        assert_eq!(
            choose(Writer::Negotiated, ae, v("1.16"), true, big),
            Encoding::Gzip { level: 4 }
        );
        assert_eq!(
            choose(Writer::Negotiated, ae, v("1.25"), true, big),
            Encoding::Gzip { level: 4 }
        );
        assert_eq!(
            choose(Writer::Negotiated, ae, v("1.26"), true, big),
            Encoding::Gzip { level: 1 }
        );
        assert_eq!(
            choose(Writer::Negotiated, ae, v("1.33"), true, THRESHOLD),
            Encoding::Identity,
            "exactly 128 KiB is not over the threshold"
        );
        assert_eq!(
            choose(Writer::Negotiated, None, v("1.33"), true, big),
            Encoding::Identity
        );
        assert_eq!(
            choose(Writer::Negotiated, ae, v("1.33"), false, big),
            Encoding::Identity,
            "gate off"
        );
        assert_eq!(
            choose(Writer::Raw, ae, v("1.33"), true, big),
            Encoding::Identity
        );
    }

    #[test]
    fn openapi_v2_gzips_from_its_own_minimum_whatever_the_gate() {
        let ae = Some("gzip");
        assert_eq!(
            choose(Writer::OpenApiV2, ae, v("1.14"), false, 512),
            Encoding::Gzip { level: 6 }
        );
        assert_eq!(
            choose(Writer::OpenApiV2, ae, v("1.20"), true, 511),
            Encoding::Identity
        );
        assert_eq!(
            choose(Writer::OpenApiV2, ae, v("1.21"), true, 1399),
            Encoding::Identity
        );
        assert_eq!(
            choose(Writer::OpenApiV2, ae, v("1.21"), true, 1400),
            Encoding::Gzip { level: 6 }
        );
    }

    #[test]
    fn writers_by_path() {
        assert_eq!(Writer::of("/api/v1/pods", false, 200), Writer::Negotiated);
        assert_eq!(Writer::of("/api/v1/pods", true, 200), Writer::Raw);
        assert_eq!(Writer::of("/apis", false, 200), Writer::Negotiated);
        assert_eq!(Writer::of("/openapi/v2", false, 200), Writer::OpenApiV2);
        assert_eq!(Writer::of("/openapi/v2", false, 401), Writer::Negotiated);
        assert_eq!(Writer::of("/openapi/v3/api/v1", false, 200), Writer::Raw);
        assert_eq!(Writer::of("/version", false, 200), Writer::Raw);
        assert_eq!(Writer::of("/healthz", false, 200), Writer::Raw);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let body = "{\"items\":[]}".repeat(20_000);
        for level in [1, 4, 6] {
            let z = gzip(body.as_bytes(), level);
            assert!(z.len() < body.len() / 10, "level {level}: {}", z.len());
            assert_eq!(
                &z[..4],
                &[0x1f, 0x8b, 8, 0],
                "gzip magic, deflate, no flags"
            );
            assert_eq!(&z[4..8], &[0, 0, 0, 0], "mtime 0");
            let mut out = String::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, body);
        }
    }

    #[test]
    fn feature_gates() {
        assert_eq!(parse_feature_gates(""), Ok(true));
        assert_eq!(
            parse_feature_gates("APIResponseCompression=false"),
            Ok(false)
        );
        for bad in [
            "APIResponseCompression=true",
            "APIResponseCompression=maybe",
            "APIResponseCompression",
            "ServerSideApply=false",
        ] {
            let e = parse_feature_gates(bad).unwrap_err();
            assert!(e.contains("APIResponseCompression=false"), "{bad}: {e}");
        }
    }
}
