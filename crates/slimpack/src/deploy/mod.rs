//! `slimpack deploy` (issue 8), first part: the Cloud Run service the plan
//! describes, as the Admin API v2 request that creates or updates it. The
//! HTTP flow (operation polling, IAM, repository creation) and the CLI are
//! not written yet.

pub mod spec;

pub use spec::{ApiRequest, DeploySettings, SecretRef, ServiceSpec};
