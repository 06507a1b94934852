//! A rendered release installed on this machine as Helm and Kubernetes
//! would: the `pre-install` hook Jobs run to their end first (the
//! migrations), then each replica of the Deployment becomes a pod
//! ([`LocalPod`]) whose init containers run to their end (exit 0 required)
//! before its main container starts as a replica of a [`TestCluster`]
//! (processes of the real binary, watched, their logs kept, killed when
//! dropped). A replica counts as started when its readiness probe, at the
//! rendered path and port, answers 200.

use crate::cluster::{ReplicaProcess, TestCluster};
use crate::database::TestDatabase;
use crate::redis_server::TestRedis;
use crate::rendered_pod::{LocalListeners, LocalPod, RenderedRelease, SecretValues, local_port};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The Deployment's replicas, running; everything stops when it is dropped.
pub struct LocalDeployment {
    /// Declared first, so dropped first: the processes stop before their
    /// files go.
    cluster: TestCluster,
    /// The replicas' pods' directories (configuration, Secret files).
    _pods: Vec<tempfile::TempDir>,
    /// Each replica's pod name.
    pod_names: Vec<String>,
    /// Where each replica's listeners are.
    listeners: Vec<LocalListeners>,
    /// What each init container printed, by replica, in order: (container
    /// name, standard output).
    init_outputs: Vec<Vec<(String, String)>>,
    /// What each hook Job printed: (Job name, standard output).
    hook_outputs: Vec<(String, String)>,
}

impl LocalDeployment {
    /// Runs the release's `pre-install` hook Jobs, then starts the
    /// Deployment's replicas (as many as it renders) with its main container
    /// named `container`, each pod on a loopback address of its own, and
    /// waits until every one is ready. `database` and `redis` are what
    /// `secrets` point the pods at; the deployment keeps them.
    pub async fn install(
        release: &RenderedRelease<'_>,
        container: &str,
        secrets: &SecretValues,
        database: TestDatabase,
        redis: Option<TestRedis>,
    ) -> LocalDeployment {
        let prefix = random_prefix();
        let mut hook_outputs = Vec::new();
        for (index, job) in release.hook_jobs("pre-install").into_iter().enumerate() {
            let pod_name = format!("{}-hook", job.name());
            let host = Ipv4Addr::new(127, prefix[0], prefix[1], 250 - last_byte(index));
            let pod = LocalPod::new(
                release,
                &job.object["spec"]["template"],
                &pod_name,
                host,
                secrets,
            );
            for init in pod.init_containers() {
                init.run_successfully().await;
            }
            let output = pod.only_container().run_successfully().await;
            hook_outputs.push((job.name().to_owned(), output));
        }

        let deployment = release.deployment();
        let replicas = deployment.object["spec"]["replicas"].as_u64().unwrap_or(1);
        let template = &deployment.object["spec"]["template"];
        let mut processes = Vec::new();
        let mut pods = Vec::new();
        let mut pod_names = Vec::new();
        let mut all_listeners = Vec::new();
        let mut init_outputs = Vec::new();
        for index in 0..usize::try_from(replicas).expect("a replica count fits usize") {
            let host = Ipv4Addr::new(127, prefix[0], prefix[1], last_byte(index) + 1);
            let pod_name = format!("{}-{index}", deployment.name());
            let pod = LocalPod::new(release, template, &pod_name, host, secrets);
            let mut outputs = Vec::new();
            for init in pod.init_containers() {
                let output = init.run_successfully().await;
                outputs.push((init.name.clone(), output));
            }
            init_outputs.push(outputs);
            let mut main = pod.container_named(container);
            let listeners = main.listen_locally(host);
            let spec = pod.container_spec(container);
            let (http_address, ready_path) = readiness(spec, &listeners, &pod_name);
            let client_address = listeners.by_table["client_api"];
            let config_path = main.config_file().unwrap_or_else(|| {
                panic!("container {container} of pod {pod_name} is given no --config file")
            });
            assert_eq!(
                main.program,
                crate::cluster::homeserver_binary(),
                "container {container} runs no homeserver"
            );
            processes.push(ReplicaProcess {
                args: main.args.iter().map(Into::into).collect(),
                env: main.env.clone(),
                current_dir: main.current_dir.clone(),
                client_address,
                http_address,
                ready_path,
                config_path,
            });
            pod_names.push(pod_name);
            all_listeners.push(listeners);
            pods.push(pod.into_directory());
        }
        let cluster = TestCluster::start_processes(processes, database, redis).await;
        LocalDeployment {
            cluster,
            _pods: pods,
            pod_names,
            listeners: all_listeners,
            init_outputs,
            hook_outputs,
        }
    }

    /// The replicas, as a cluster (addresses, logs, kill and restart).
    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    pub fn cluster_mut(&mut self) -> &mut TestCluster {
        &mut self.cluster
    }

    pub fn replicas(&self) -> usize {
        self.cluster.replicas()
    }

    pub fn pod_name(&self, index: usize) -> &str {
        &self.pod_names[index]
    }

    /// Where replica `index`'s listeners are, by configuration table
    /// (`federation`) and by rendered port.
    pub fn listeners(&self, index: usize) -> &LocalListeners {
        &self.listeners[index]
    }

    /// The local addresses of every replica's listener of `table`
    /// (`federation`): what a Service of that port forwards to.
    pub fn addresses_of(&self, table: &str) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .map(|listeners| listeners.by_table[table])
            .collect()
    }

    /// What replica `index`'s init containers printed: (name, output).
    pub fn init_outputs(&self, index: usize) -> &[(String, String)] {
        &self.init_outputs[index]
    }

    /// What the hook Jobs printed: (Job name, output).
    pub fn hook_outputs(&self) -> &[(String, String)] {
        &self.hook_outputs
    }

    /// The configuration file replica `index` runs with (the rendered TOML,
    /// its mount paths made local).
    pub fn config_path(&self, index: usize) -> PathBuf {
        self.cluster.config_path(index)
    }
}

/// The readiness probe's local address and path; panics unless it is an
/// HTTP GET.
fn readiness(
    container: &Value,
    listeners: &LocalListeners,
    pod_name: &str,
) -> (SocketAddr, String) {
    let probe = &container["readinessProbe"]["httpGet"];
    assert!(
        probe.is_object(),
        "the main container of pod {pod_name} has no readinessProbe.httpGet: {}",
        container["readinessProbe"]
    );
    let path = probe["path"].as_str().unwrap_or("/").to_owned();
    (local_port(container, &probe["port"], listeners), path)
}

/// `127.R.S.0/24` with `R` and `S` random: the pods' addresses, apart from
/// other tests' clusters.
fn random_prefix() -> [u8; 2] {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    [bytes[0] % 100 + 100, bytes[1]]
}

/// A pod's index as the last byte of its address (at most 200 pods).
fn last_byte(index: usize) -> u8 {
    u8::try_from(index)
        .ok()
        .filter(|byte| *byte < 200)
        .unwrap_or_else(|| {
            panic!(
                "the harness runs at most 200 pods of a kind, not {}",
                index + 1
            )
        })
}
