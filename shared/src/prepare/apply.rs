//! Writing the plan: one request per row, in order, each marked done, failed or not attempted.
//!
//! Every request is safe to repeat, so [`Connection::call`] may retry it: server-side apply for
//! namespaces, the ServiceAccount and the WorkloadGroup; a create of `cacerts` whose AlreadyExists
//! is answered by re-reading and comparing; a replace guarded by the resourceVersion we compared.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::Error;
use super::observe::get_opt;
use super::options::Options;
use super::plan::{RESTARTED_AT, ca_differs, same_secret_content};
use crate::cli::DryRun;
use crate::istio::IstioKind;
use crate::kube::{Action as Request, Connection, apply_params, post_params};
use crate::pki::CaMaterial;
use crate::plan::{Action, Change, Plan, State};

/// Apply every writing row of `plan`, in waves: rows that do not depend on each other (cacerts
/// in the Istio namespace and the VM's namespace, say) are sent together, so the critical path
/// is one round trip per level of dependency, not per object. After a failure the failed row
/// says so, the rows not yet sent are marked not attempted, and the error is returned.
pub async fn apply(
    conn: &Connection,
    plan: &mut Plan,
    opts: &Options,
    ca: Option<&CaMaterial>,
) -> Result<(), Error> {
    let creating_namespaces: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.kind == "Namespace" && c.action == Action::Create)
        .map(|c| c.name.clone())
        .collect();
    let waves = waves(&plan.changes);
    for wave in 1..=waves.iter().copied().max().unwrap_or(0) {
        let mut batch: Vec<(usize, Change)> = Vec::new();
        for (i, change) in plan.changes.iter_mut().enumerate() {
            if waves[i] != wave {
                continue;
            }
            // With dryRun=All the namespace is validated but not made, so the server would
            // answer 404 for anything inside it: say so instead of sending a request bound to fail.
            if opts.dry_run == DryRun::Server
                && change
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| creating_namespaces.contains(ns))
            {
                change.detail = format!(
                    "not sent: namespace {} does not exist yet",
                    change.namespace.as_deref().unwrap_or_default()
                );
                continue;
            }
            batch.push((i, change.clone()));
        }
        let results = futures::future::join_all(
            batch
                .iter_mut()
                .map(|(_, change)| apply_one(conn, change, opts, ca)),
        )
        .await;
        let mut first_error = None;
        for ((i, mut change), result) in batch.into_iter().zip(results) {
            match result {
                Ok(()) if change.state == State::Planned => {
                    change.state = if opts.dry_run == DryRun::Server {
                        State::ServerDryRun
                    } else {
                        State::Done
                    };
                }
                Ok(()) => {}
                Err(err) => {
                    change.state = State::Failed;
                    first_error.get_or_insert(err);
                }
            }
            plan.changes[i] = change;
        }
        if let Some(mut err) = first_error {
            plan.abandon_rest();
            if let Error::CaDiffers {
                nothing_written, ..
            } = &mut err
            {
                *nothing_written = !plan.changes.iter().any(|c| c.state == State::Done);
            }
            return Err(err);
        }
    }
    Ok(())
}

/// The wave each row is sent in (0: nothing to send): one more than the latest row it needs —
/// the Namespace row of its namespace, and for a control-plane restart the cacerts row.
fn waves(changes: &[Change]) -> Vec<usize> {
    let needs = |row: &Change, earlier: &Change| {
        (earlier.kind == "Namespace" && row.namespace.as_deref() == Some(earlier.name.as_str()))
            || (row.kind == "Deployment" && earlier.kind == "Secret")
    };
    let mut waves = vec![0; changes.len()];
    for (i, row) in changes.iter().enumerate() {
        if !row.writes() {
            continue;
        }
        waves[i] = 1 + changes[..i]
            .iter()
            .zip(&waves)
            .filter(|(earlier, _)| earlier.writes() && needs(row, earlier))
            .map(|(_, w)| *w)
            .max()
            .unwrap_or(0);
    }
    waves
}

fn object(change: &Change) -> Value {
    change.object.clone().unwrap_or(Value::Null)
}

async fn apply_one(
    conn: &Connection,
    change: &mut Change,
    opts: &Options,
    ca: Option<&CaMaterial>,
) -> Result<(), Error> {
    let client = conn.client.clone();
    let params = apply_params(opts.dry_run);
    let name = change.name.clone();
    match change.kind.as_str() {
        "Namespace" => {
            let api: Api<Namespace> = Api::all(client);
            let body = object(change);
            let patch = Patch::Apply(&body);
            conn.call(Request::new("patch", "namespaces").name(&name), || {
                api.patch(&name, &params, &patch)
            })
            .await?;
        }
        "ServiceAccount" => {
            let ns = change.namespace.clone().unwrap_or_default();
            let api: Api<ServiceAccount> = Api::namespaced(client, &ns);
            let body = object(change);
            let patch = Patch::Apply(&body);
            conn.call(
                Request::new("patch", "serviceaccounts").ns(&ns).name(&name),
                || api.patch(&name, &params, &patch),
            )
            .await?;
        }
        "WorkloadGroup" => {
            let ns = change.namespace.clone().unwrap_or_default();
            let body = object(change);
            let version = body["apiVersion"]
                .as_str()
                .and_then(|v| v.split_once('/'))
                .map_or("v1", |(_, v)| v)
                .to_owned();
            let ar = IstioKind::WorkloadGroup.resource(&version);
            let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
            let patch = Patch::Apply(&body);
            conn.call(
                Request::new("patch", IstioKind::WorkloadGroup.resource_name())
                    .ns(&ns)
                    .name(&name),
                || api.patch(&name, &params, &patch),
            )
            .await?;
        }
        "Secret" => write_cacerts(conn, change, opts, ca).await?,
        "Deployment" => restart(conn, change, opts).await?,
        other => unreachable!("prepare plans no {other}"),
    }
    Ok(())
}

/// Create or (with `--force`) replace `cacerts`. A concurrent prepare is detected by the
/// create's AlreadyExists or the replace's Conflict: the winner's content is re-read and
/// compared, so exactly one CA ends up stored and the loser says so.
async fn write_cacerts(
    conn: &Connection,
    change: &mut Change,
    opts: &Options,
    ca: Option<&CaMaterial>,
) -> Result<(), Error> {
    let ns = change.namespace.clone().unwrap_or_default();
    let name = change.name.clone();
    let api: Api<Secret> = Api::namespaced(conn.client.clone(), &ns);
    let wanted: Secret = serde_json::from_value(object(change)).map_err(std::io::Error::other)?;
    let post = post_params(opts.dry_run);
    let mut guarded = wanted.clone();
    if change.action == Action::Create {
        match conn
            .call(
                Request::new("create", "secrets").ns(&ns).name(&name),
                || api.create(&post, &wanted),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        // Someone made it between our read and our create: judge what they stored.
        let Some(current) = read_cacerts(conn, &api, &ns, &name).await? else {
            return Err(Error::CaChangedMeanwhile {
                secret: format!("{ns}/{name}"),
            });
        };
        if same_secret_content(&current, &wanted) {
            change.action = Action::Unchanged;
            change.detail =
                "already there with the same content (an earlier attempt or another run made it)"
                    .into();
            return Ok(());
        }
        if !opts.force {
            return Err(match ca {
                Some(ca) => ca_differs(&ns, &current, ca),
                None => Error::CaChangedMeanwhile {
                    secret: format!("{ns}/{name}"),
                },
            });
        }
        guarded.metadata.resource_version = current.metadata.resource_version;
        change.action = Action::Update;
    } else {
        guarded.metadata.resource_version = change
            .object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    match conn
        .call(
            Request::new("update", "secrets").ns(&ns).name(&name),
            || api.replace(&name, &post, &guarded),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_conflict() => {
            // The Secret changed after we compared it: only "it now holds what we want" is fine.
            match read_cacerts(conn, &api, &ns, &name).await? {
                Some(current) if same_secret_content(&current, &wanted) => {
                    change.action = Action::Unchanged;
                    change.detail =
                        "already replaced with the same content (an earlier attempt or another run)".into();
                    Ok(())
                }
                _ => Err(Error::CaChangedMeanwhile {
                    secret: format!("{ns}/{name}"),
                }),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn read_cacerts(
    conn: &Connection,
    api: &Api<Secret>,
    ns: &str,
    name: &str,
) -> Result<Option<Secret>, Error> {
    Ok(get_opt(
        conn,
        api,
        Request::new("get", "secrets").ns(ns).name(name),
        name,
    )
    .await?)
}

/// `kubectl rollout restart`: stamp the pod template with `restartedAt` = now (RFC 3339), so the
/// Deployment rolls its pods and the new ones read the new `cacerts`.
async fn restart(conn: &Connection, change: &Change, opts: &Options) -> Result<(), Error> {
    let ns = change.namespace.clone().unwrap_or_default();
    let name = change.name.clone();
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), &ns);
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let body = restart_patch(&now);
    let params = PatchParams {
        dry_run: opts.dry_run == DryRun::Server,
        field_manager: Some(crate::kube::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = Patch::Strategic(&body);
    conn.call(
        Request::new("patch", "deployments.apps")
            .ns(&ns)
            .name(&name),
        || api.patch(&name, &params, &patch),
    )
    .await?;
    Ok(())
}

/// The strategic merge patch `kubectl rollout restart` sends.
pub fn restart_patch(now: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_rows_share_a_wave() {
        let rows = vec![
            Change::new(Action::Unchanged, "Namespace", None, "istio-system"),
            Change::new(Action::Create, "Secret", Some("istio-system"), "cacerts"),
            Change::new(Action::Create, "Namespace", None, "expandvm"),
            Change::new(
                Action::Create,
                "ServiceAccount",
                Some("expandvm"),
                "expandvm",
            ),
            Change::new(Action::Create, "WorkloadGroup", Some("expandvm"), "vm"),
            Change::new(Action::Other, "Deployment", Some("istio-system"), "istiod"),
        ];
        assert_eq!(waves(&rows), [0, 1, 1, 2, 2, 2]);
        // A namespace that is created first holds back what goes into it.
        let rows = vec![
            Change::new(Action::Create, "Namespace", None, "istio-system"),
            Change::new(Action::Create, "Secret", Some("istio-system"), "cacerts"),
            Change::new(Action::Other, "Deployment", Some("istio-system"), "istiod"),
        ];
        assert_eq!(waves(&rows), [1, 2, 3]);
    }
}
