//! Health (`grpc.health.v1`) and reflection (v1 and v1alpha): a server is SERVING when its
//! database is migrated and answers and it is not draining; `liveness` stays SERVING while
//! the process runs.

use std::sync::Arc;

use tonic::{server::NamedService, service::Routes};
use tonic_health::{ServingStatus, server::HealthReporter};

/// Health (`grpc.health.v1`) and reflection (v1 and v1alpha) for the given services, all
/// NOT_SERVING until [`Lifecycle::set_serving`].
pub struct Infrastructure {
    /// Flips the health status.
    pub lifecycle: Lifecycle,
    /// Routes of health and reflection, to which the service adds its own.
    pub routes: tonic::service::RoutesBuilder,
}

/// Flips the health status of the server and of each of its services: SERVING when the
/// database is migrated and reachable and the server is not draining.
#[derive(Clone)]
pub struct Lifecycle {
    reporter: HealthReporter,
    services: Vec<&'static str>,
    /// Held while a change is published, so that the last status published is the one of
    /// the last change.
    state: Arc<tokio::sync::Mutex<Readiness>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Readiness {
    migrated: bool,
    database_reachable: bool,
    draining: bool,
}

impl Lifecycle {
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }

    async fn update(&self, change: impl FnOnce(&mut Readiness)) {
        let mut state = self.state.lock().await;
        change(&mut state);
        let serving = state.migrated && state.database_reachable && !state.draining;
        self.set(if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
        .await;
    }

    /// Publishes the current state (NOT_SERVING until the database is migrated).
    pub async fn publish(&self) {
        self.update(|_| {}).await;
    }

    /// The database is migrated: ready for traffic unless draining.
    pub async fn set_serving(&self) {
        self.update(|state| {
            state.migrated = true;
            state.database_reachable = true;
        })
        .await;
    }

    /// Draining: NOT_SERVING from now on.
    pub async fn set_not_serving(&self) {
        self.update(|state| state.draining = true).await;
    }

    /// Whether the database answered the last probe; NOT_SERVING while it does not.
    pub async fn set_database_reachable(&self, reachable: bool) {
        self.update(|state| state.database_reachable = reachable)
            .await;
    }

    /// The process is up and answering. Liveness probes ask for this name: it is SERVING
    /// from the start to the end, so that a database outage or a drain makes the server
    /// unready (readiness asks for "") without getting it restarted.
    pub async fn set_alive(&self) {
        self.reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
    }
}

/// The health service name liveness probes ask for.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Why reflection could not be built.
pub type ReflectionError = tonic_reflection::server::Error;

/// Builds health and reflection for services named `services`.
pub fn infrastructure(services: &[&'static str]) -> Result<Infrastructure, ReflectionError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(invest_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(invest_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut routes = Routes::builder();
    routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(Infrastructure {
        lifecycle: Lifecycle {
            reporter,
            services: services.to_vec(),
            state: Arc::default(),
        },
        routes,
    })
}

/// The full name of a generated service, for health.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}
