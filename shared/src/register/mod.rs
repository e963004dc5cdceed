//! `kubectl meshvm register`: make the VM an endpoint (Service + Endpoints, or WorkloadEntry).
