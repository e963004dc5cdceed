//! `metav1.Status` error bodies, worded as kube-apiserver words them.

use serde_json::{Value, json};

/// An API error answered as a `Status` object with the matching HTTP code.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the apiserver fills it.
    pub details: Option<Value>,
    /// Extra response headers (e.g. `Retry-After`).
    pub retry_after: Option<u32>,
    /// `Status.metadata` (a `continue` token on an expired list), `{}` when None.
    pub metadata: Option<Value>,
}

/// Names the resource in messages the way the apiserver does: `secrets` or `destinationrules.networking.istio.io`.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = json!({});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d["kind"] = json!(kind);
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        ApiError {
            code,
            reason,
            message,
            details,
            retry_after: None,
            metadata: None,
        }
    }

    /// 404 for a missing object of `group`/`resource`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, resource)),
            Some(details(name, group, resource)),
        )
    }

    /// 404 for a path the sim does not serve.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            Some(json!({})),
        )
    }

    /// 409 on create of an existing object.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
            Some(details(name, group, resource)),
        )
    }

    /// 409 on an update with a stale `resourceVersion` (or a failed precondition).
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, resource)
            ),
            Some(details(name, group, resource)),
        )
    }

    /// The message of a stale-resourceVersion conflict.
    pub const STALE: &'static str = "the object has been modified; please apply your changes to the latest version and try again";

    /// 409 for server-side apply conflicts between field managers.
    pub fn apply_conflicts(conflicts: &[(String, String, String)]) -> Self {
        // (manager, apiVersion, field path)
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, v, f)| {
                json!({"reason": "FieldManagerConflict",
                       "message": format!("conflict with \"{m}\" using {v}"), "field": f})
            })
            .collect();
        let message = if conflicts.len() == 1 {
            let (m, v, f) = &conflicts[0];
            format!("Apply failed with 1 conflict: conflict with \"{m}\" using {v}: {f}")
        } else {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, v, f)| format!("* {f}: conflict with \"{m}\" using {v}"))
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        };
        Self::new(409, "Conflict", message, Some(json!({ "causes": causes })))
    }

    /// 422 with field causes; `causes` is `(field, reason, message)`.
    pub fn invalid(
        group: &str,
        kind: &str,
        name: &str,
        causes: &[(String, String, String)],
    ) -> Self {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let parts: Vec<String> = causes
            .iter()
            .map(|(f, _, m)| {
                if f.is_empty() {
                    m.clone()
                } else {
                    format!("{f}: {m}")
                }
            })
            .collect();
        let joined = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let mut d = details(name, group, kind);
        d["causes"] = causes
            .iter()
            .map(|(f, r, m)| json!({"reason": r, "message": m, "field": f}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {joined}"),
            Some(d),
        )
    }

    /// 400 with a free-form message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    /// 401 for a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// 403 as the RBAC authorizer words it.
    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Self {
        // The subject names the resource without its subresource, as the RBAC authorizer does.
        let main = resource.split('/').next().unwrap_or(resource);
        let subject = if name.is_empty() {
            qualified(group, main)
        } else {
            format!("{} \"{name}\"", qualified(group, main))
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
            ),
            Some(details(name, group, main)),
        )
    }

    /// 403 for what the authorizer refused, as `responsewriters.ForbiddenStatusError` words
    /// it (apiserver@kubernetes-1.33.0 pkg/endpoints/handlers/responsewriters/errors.go:44-77;
    /// the same text at kubernetes-1.14.0 errors.go:36-71): `<resource>[.<group>] ["<name>"] is
    /// forbidden: User "<u>" cannot <verb> resource "<resource>[/<sub>]" in API group "<g>"`
    /// then `in the namespace "<ns>"` or `at the cluster scope`; for paths `forbidden: User
    /// "<u>" cannot <verb> path "<path>"`; the authorizer's reason, if any, after `: `; `&<>`
    /// escaped. Details name the resource without its subresource (`apierrors.NewForbidden`,
    /// apimachinery@kubernetes-1.33.0 pkg/api/errors/errors.go:209-229).
    pub fn forbidden_attrs(user: &str, a: &crate::rbac::Attributes, reason: &str) -> Self {
        let sanitize = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let what = if a.resource_request {
            let scope = if a.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", a.namespace)
            };
            format!(
                "User {user:?} cannot {} resource {:?} in API group {:?} {scope}",
                a.verb,
                a.combined_resource(),
                a.group
            )
        } else {
            format!("User {user:?} cannot {} path {:?}", a.verb, a.path)
        };
        let mut err = sanitize(&what);
        if !reason.is_empty() {
            err = format!("{err}: {reason}");
        }
        if !a.resource_request {
            return Self::new(
                403,
                "Forbidden",
                format!("forbidden: {err}"),
                Some(json!({})),
            );
        }
        let subject = if a.name.is_empty() {
            qualified(&a.group, &a.resource)
        } else {
            format!("{} {:?}", qualified(&a.group, &a.resource), a.name)
        };
        Self::new(
            403,
            "Forbidden",
            format!("{subject} is forbidden: {err}"),
            Some(details(&a.name, &a.group, &a.resource)),
        )
    }

    /// 403 with a custom message (e.g. deleting a system namespace).
    pub fn forbidden_msg(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: {why}",
                qualified(group, resource)
            ),
            Some(details(name, group, resource)),
        )
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(verb: &str, resource: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{resource}\""),
            Some(json!({})),
        )
    }

    /// 415 from the apiserver's own content-type check (`PatchResource`, the custom resource
    /// handler): `accepted` in the server's order
    /// (apiserver@kubernetes-1.14.0 pkg/endpoints/handlers/negotiation/errors.go:59-71; the same
    /// text through 1.35.0 errors.go:89).
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            None,
        )
    }

    /// 415 from go-restful's router, which refuses a Content-Type none of a built-in route's
    /// `Consumes` lists before any handler runs (go-restful@ff4f55a2 jsr311.go:71, the version
    /// apiserver@kubernetes-1.14.0 pins; go-restful@v3.11.0 jsr311.go:129-131 for 1.33), turned
    /// into a Status by apiserver's `serviceErrorHandler` (apiserver@kubernetes-1.14.0
    /// pkg/server/handler.go:177-185) via `NewGenericServerResponse`, which keeps the message
    /// for 415 (apimachinery@kubernetes-1.14.0 pkg/api/errors/errors.go:398-401).
    pub fn restful_unsupported_media_type() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "415: Unsupported Media Type".into(),
            Some(json!({})),
        )
    }

    /// 415 with a free-form message (a request body the sim cannot decode).
    pub fn unsupported_media_type_msg(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message.into(), None)
    }

    /// 406 `NotAcceptable` (`errNotAcceptable.Status()`, apiserver@kubernetes-1.14.0
    /// pkg/endpoints/handlers/negotiation/errors.go:41-48).
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message.into(), None)
    }

    /// 410 `Expired` (`NewResourceExpired`, apimachinery@kubernetes-1.14.0
    /// pkg/api/errors/errors.go:213-220).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into(), None)
    }

    /// 500 injected by the fault lever.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into(), None)
    }

    /// 429 injected by the fault lever, with `Retry-After`.
    pub fn too_many_requests(retry_after: u32) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.".into(),
            Some(json!({"retryAfterSeconds": retry_after})),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// The `Status` JSON body.
    pub fn body(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": self.metadata.clone().unwrap_or_else(|| json!({})),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_the_qualified_resource() {
        let e = ApiError::not_found("networking.istio.io", "destinationrules", "x");
        assert_eq!(
            e.message,
            "destinationrules.networking.istio.io \"x\" not found"
        );
        assert_eq!(e.body()["details"]["group"], "networking.istio.io");
    }

    #[test]
    fn forbidden_matches_rbac_wording() {
        let e = ApiError::forbidden("u", "list", "", "secrets", "", Some("ns1"));
        assert_eq!(
            e.message,
            "secrets is forbidden: User \"u\" cannot list resource \"secrets\" in API group \"\" in the namespace \"ns1\""
        );
    }

    #[test]
    fn invalid_with_one_cause_is_not_bracketed() {
        let e = ApiError::invalid(
            "networking.istio.io",
            "DestinationRule",
            "bad",
            &[(
                "spec.trafficPolicy.tls.mode".into(),
                "FieldValueNotSupported".into(),
                "Unsupported value: \"BOGUS\"".into(),
            )],
        );
        assert_eq!(
            e.message,
            "DestinationRule.networking.istio.io \"bad\" is invalid: spec.trafficPolicy.tls.mode: Unsupported value: \"BOGUS\""
        );
        assert_eq!(e.code, 422);
    }
}
