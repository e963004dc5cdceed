//! `kubectl meshvm prepare`: validated cacerts, VM namespace, ServiceAccount, WorkloadGroup.
