//! kube-sim integration tests: one binary, one module per area.

mod binary;
mod compression;
mod controllers;
mod kube_rs;
mod kubectl;
mod levers;
mod rbac;
mod scenarios;
mod versions;

/// Send `req` through a kube-rs client as it is: status, headers and body as received (the
/// client decodes gzip unless built without it).
pub(crate) async fn raw(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt as _;
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("transport works");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}
