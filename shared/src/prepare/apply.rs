//! Writing the plan through the one executor ([`crate::plan::write::execute`]), turning its failures
//! into prepare's words, and waiting for a restarted control plane to roll out.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::Error;
use super::options::Options;
use super::plan::ca_differs;
use crate::kube::{Connection, Request};
use crate::pki::CaMaterial;
use crate::plan::write::{self, Kind, Verb};
use crate::plan::{Action, Plan, State};

pub use super::plan::restart_patch;

/// How often the rollout is looked at while waiting for it.
pub const ROLLOUT_POLL: Duration = Duration::from_secs(1);

/// Send every writing row of `plan` (see [`write::execute`]: waves, retries, dry run, the
/// fallback from server-side apply). A lost race for `cacerts` becomes the refusal of a
/// different CA, or "changed meanwhile"; every row says how far it got.
pub async fn apply(
    conn: &Connection,
    plan: &mut Plan,
    opts: &Options,
    ca: Option<&CaMaterial>,
) -> Result<(), Error> {
    // `rollout restart` stamps the moment it is sent.
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for change in &mut plan.changes {
        if let Some(w) = change.write.as_mut()
            && matches!(w.verb, Verb::Patch(_))
            && change.kind == Kind::Deployment
        {
            w.object = restart_patch(&now);
        }
    }
    let Err(failure) = write::execute(conn, plan, opts.dry_run).await else {
        return Ok(());
    };
    let row = &plan.changes[failure.row];
    let secret = format!(
        "{}/{}",
        row.namespace.as_deref().unwrap_or_default(),
        row.name
    );
    Err(match failure.error {
        write::Error::Kube(e) => Error::Kube(e),
        write::Error::Raced { current, .. } if row.kind == Kind::Secret => {
            let stored = current.and_then(|v| serde_json::from_value::<Secret>(v).ok());
            match (stored, ca) {
                // Another prepare stored a different CA first: refuse, with both roots.
                (Some(stored), Some(ca)) if row.action == Action::Create && !opts.force => {
                    let mut err = ca_differs(&opts.istio_namespace, &stored, ca);
                    if let Error::CaDiffers {
                        nothing_written, ..
                    } = &mut err
                    {
                        *nothing_written = !plan.changes.iter().any(|c| c.state == State::Done);
                    }
                    err
                }
                _ => Error::CaChangedMeanwhile { secret },
            }
        }
        other @ (write::Error::Raced { .. } | write::Error::Invalid { .. }) => Error::Write(other),
    })
}

/// How a Deployment's rollout stands, judged as `kubectl rollout status` judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the latest template and is available.
    Done(String),
    /// Still rolling: what it waits for.
    Waiting(String),
    /// The rollout exceeded its progress deadline.
    Failed(String),
    /// The Deployment reports no status at all (no replicas, no conditions, nothing observed):
    /// no controller reports on it, so there is nothing to wait for.
    Unreported,
}

/// Judge a Deployment's rollout, following kubectl's `DeploymentStatusViewer.Status`
/// (kubernetes/kubectl@kubernetes-1.33.0 pkg/polymorphichelpers/rollout_status.go:59-92): the
/// spec change must be observed (`observedGeneration >= generation`), not past its progress
/// deadline, every wanted replica updated, no old replica left, every updated one available.
pub fn rollout_status(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = &d.status else {
        return Rollout::Unreported;
    };
    let no_conditions = status.conditions.as_ref().is_none_or(Vec::is_empty);
    if status.observed_generation.is_none() && status.replicas.is_none() && no_conditions {
        return Rollout::Unreported;
    }
    let generation = d.metadata.generation.unwrap_or(0);
    if generation > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} spec update to be observed"
        ));
    }
    // kubectl/pkg/util/deployment/deployment.go:56 `TimedOutReason`.
    let timed_out = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if timed_out {
        return Rollout::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(wanted) = d.spec.as_ref().and_then(|s| s.replicas)
        && updated < wanted
    {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} rollout to finish: {updated} out of {wanted} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available"
        ));
    }
    Rollout::Done(format!(
        "{available} of {updated} replicas updated and available"
    ))
}

/// Wait until Deployment `namespace/name` has rolled out (see [`rollout_status`]), reading it
/// every `poll`, for at most `timeout` (zero: no limit, as `kubectl rollout status --timeout 0`). A spinner
/// on a terminal shows what it waits for. Returns the final judgement: [`Rollout::Done`] or
/// [`Rollout::Unreported`]; the rest are errors.
pub async fn wait_for_rollout(
    conn: &Connection,
    namespace: &str,
    name: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<Rollout, Error> {
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), namespace);
    let spinner = crate::terminal::progress(format!(
        "waiting for deployment {namespace}/{name} to roll out"
    ));
    let mut last = String::from("no status read yet");
    let watch = async {
        loop {
            let deployment = conn
                .call(
                    Request::new("get", "deployments.apps")
                        .ns(namespace)
                        .name(name),
                    || api.get(name),
                )
                .await?;
            match rollout_status(&deployment) {
                Rollout::Waiting(what) => {
                    spinner.set_message(what.clone());
                    last = what;
                }
                Rollout::Failed(message) => {
                    return Err(Error::RolloutFailed {
                        deployment: format!("{namespace}/{name}"),
                        message,
                    });
                }
                done => return Ok(done),
            }
            tokio::time::sleep(poll).await;
        }
    };
    let result = if timeout.is_zero() {
        watch.await
    } else {
        match tokio::time::timeout(timeout, watch).await {
            Ok(result) => result,
            Err(_) => Err(Error::RolloutTimeout {
                deployment: format!("{namespace}/{name}"),
                timeout,
                last: last.clone(),
            }),
        }
    };
    spinner.finish_and_clear();
    result
}

/// After a restart was sent: wait for its rollout, and write on the restart row what came of it.
/// `Some(how)` when it rolled out.
pub async fn await_restart(
    conn: &Connection,
    plan: &mut Plan,
    opts: &Options,
    err: &mut impl std::io::Write,
) -> Result<Option<String>, Error> {
    let Some(row) = plan.changes.iter_mut().find(|c| {
        c.kind == Kind::Deployment && c.action == Action::Other && c.state == State::Done
    }) else {
        return Ok(None);
    };
    let namespace = row.namespace.clone().unwrap_or_default();
    let name = row.name.clone();
    match wait_for_rollout(conn, &namespace, &name, opts.timeout, ROLLOUT_POLL).await {
        Ok(Rollout::Done(how)) => {
            row.detail = format!("rolled out with the new CA key ({how})");
            Ok(Some(row.detail.clone()))
        }
        Ok(_) => {
            row.detail = "restarted; it reports no rollout status to wait for".into();
            writeln!(
                err,
                "note: Deployment {namespace}/{name} reports no rollout status (no controller has observed it); not waiting for it"
            )?;
            Ok(None)
        }
        Err(e) => {
            row.detail = "restarted; the rollout did not finish".into();
            Err(e)
        }
    }
}

/// After Citadel (Istio 1.4) restarted with a new `cacerts`: wait until every `istio.<sa>`
/// secret in the mesh is issued under the new root, bounded by `--timeout`. Citadel re-issues
/// them only on its secret informer's resync — every minute (istio/istio@1.4.2
/// security/pkg/k8s/controller/workloadsecret.go:243 `secretResyncPeriod`, and `scrtUpdated`
/// refreshing a secret whose root is not the CA's, lines 553-601) — not when it starts: until
/// then, workloads with old-root and new-root certificates reject each other. Returns how many
/// were still pending when the wait ended (0: all re-issued).
pub async fn await_reissue(
    conn: &Connection,
    root_pem: &[u8],
    timeout: Duration,
    poll: Duration,
) -> Result<usize, Error> {
    let api: Api<Secret> = Api::all(conn.client.clone());
    let params = kube::api::ListParams::default().fields("type=istio.io/key-and-cert");
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    let spinner = crate::terminal::progress("waiting for Citadel to re-issue the workload secrets");
    loop {
        let stale = crate::read::list_all(
            conn,
            &api,
            Request::new("list", "secrets"),
            &params,
            |secret: Secret| {
                let root = secret.data.as_ref()?.get("root-cert.pem")?;
                (root.0.trim_ascii() != root_pem.trim_ascii()).then_some(())
            },
        )
        .await?
        .len();
        if stale == 0 || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            spinner.finish_and_clear();
            return Ok(stale);
        }
        spinner.set_message(format!(
            "waiting for Citadel to re-issue {stale} istio.* secret(s) under the new root (it does on its resync, about every minute)"
        ));
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[allow(clippy::needless_pass_by_value)] // called with json!(...) literals
    fn deployment(value: serde_json::Value) -> Deployment {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istiod", "namespace": "istio-system", "generation": 3},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "istiod"}},
                     "template": {"metadata": {"labels": {"app": "istiod"}}}}});
        if let Some(status) = value.get("status") {
            d["status"] = status.clone();
        }
        if let Some(replicas) = value.get("replicas") {
            d["spec"]["replicas"] = replicas.clone();
        }
        serde_json::from_value(d).unwrap()
    }

    /// Table-driven like kubectl's rollout_status_test.go (TestDeploymentStatusViewerStatus).
    #[test]
    fn rollout_judgement_follows_kubectl() {
        let cases = [
            ("no status at all", json!({}), "unreported"),
            ("an empty status", json!({"status": {}}), "unreported"),
            (
                "spec change not observed",
                json!({"status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}}),
                "spec update to be observed",
            ),
            (
                "new replicas not all updated",
                json!({"status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}}),
                "1 out of 2 new replicas have been updated",
            ),
            (
                "old replicas pending termination",
                json!({"status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}}),
                "1 old replicas are pending termination",
            ),
            (
                "updated replicas not yet available",
                json!({"status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}}),
                "1 of 2 updated replicas are available",
            ),
            (
                "rolled out",
                json!({"status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}}),
                "done: 2 of 2",
            ),
            (
                "scaled to zero, observed",
                json!({"replicas": 0, "status": {"observedGeneration": 3}}),
                "done: 0 of 0",
            ),
            (
                "past its progress deadline",
                json!({"status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1,
                    "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}}),
                "failed: deployment \"istiod\" exceeded its progress deadline",
            ),
        ];
        for (what, input, want) in cases {
            let got = match rollout_status(&deployment(input)) {
                Rollout::Done(m) => format!("done: {m}"),
                Rollout::Waiting(m) => m,
                Rollout::Failed(m) => format!("failed: {m}"),
                Rollout::Unreported => "unreported".into(),
            };
            assert!(got.contains(want), "{what}: {got}");
        }
    }

    #[tokio::test]
    async fn waiting_polls_until_rolled_out() {
        let d = |status: serde_json::Value| {
            let mut v = serde_json::to_value(deployment(json!({}))).unwrap();
            v["status"] = status;
            (200, v)
        };
        let (conn, log) = crate::plan::write::fake::connection(vec![
            d(
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            ),
            d(
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            ),
        ]);
        let poll = Duration::from_millis(5);
        let got = wait_for_rollout(
            &conn,
            "istio-system",
            "istiod",
            Duration::from_secs(60),
            poll,
        )
        .await
        .unwrap();
        assert!(matches!(got, Rollout::Done(_)), "{got:?}");
        assert_eq!(log.lines().len(), 2);
    }

    #[tokio::test]
    async fn waiting_ends_at_the_timeout() {
        let mut answers = Vec::new();
        for _ in 0..20 {
            let mut v = serde_json::to_value(deployment(json!({}))).unwrap();
            v["status"] = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1});
            answers.push((200, v));
        }
        let (conn, _log) = crate::plan::write::fake::connection(answers);
        let poll = Duration::from_millis(20);
        let timeout = Duration::from_millis(150);
        let err = wait_for_rollout(&conn, "istio-system", "istiod", timeout, poll)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("istio-system/istiod") && text.contains("150ms"),
            "{text}"
        );
        assert!(text.contains("1 out of 2 new replicas"), "{text}");
    }
}
