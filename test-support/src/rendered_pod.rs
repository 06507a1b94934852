//! The pods a rendered chart describes, run on this machine with the real
//! binaries: a container's command, arguments and environment exactly as
//! rendered, its volumes made local directories, the Secrets filled by the
//! test, so that a test runs what Kubernetes would run.
//!
//! What changes, and only that:
//! - each volume mount becomes a local directory (a ConfigMap volume holds the
//!   rendered ConfigMap's data, a Secret volume the files the test supplies,
//!   an `emptyDir` nothing), and a mount path at the start of an argument, an
//!   environment value or a string of a mounted TOML file is replaced by its
//!   directory (that prefix only, nothing else of the text);
//! - the homeserver's listeners (`[client_api]`, `[http]`, `[federation]`)
//!   move from the rendered `0.0.0.0` ports to free ports of a loopback
//!   address of the pod's own, through the `CONCLAVE_*__LISTEN` environment
//!   variables (tests bind 127.0.0.0/8 only); the container ports and the
//!   probes follow them by the rendered port numbers;
//! - `secretKeyRef` values and Secret volumes come from the test
//!   ([`SecretValues`]), or else from the Secrets the release renders;
//!   `fieldRef` values from the pod (its name, namespace, address); service
//!   links (`NAME_SERVICE_HOST`...) from the release's Services unless the
//!   pod turns them off.
//!
//! Anything of a pod spec this module does not understand (an environment
//! source, a volume type, a container field it does not know) fails the test
//! with what it was, rather than being dropped: the harness follows the chart
//! as it grows.

use crate::chart::Manifest;
use crate::cluster::{client_binary, free_address, homeserver_binary};
use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// Longest a container run to its end (an init container, a hook Job's) may
/// take.
const RUN_TO_END_TIMEOUT: Duration = Duration::from_secs(120);

/// The image's ENTRYPOINT and CMD (the shared contract of the Dockerfile):
/// what a container runs when it names no `command` or no `args`.
const IMAGE_ENTRYPOINT: &str = "conclave-homeserver";
const IMAGE_CMD: &[&str] = &["run"];

/// The image's WORKDIR, the working directory of a container without
/// `workingDir`.
const IMAGE_WORKDIR: &str = "/var/lib/conclave";

/// The homeserver's listeners: configuration table and the environment
/// variable that overrides its `listen`.
const LISTENERS: [(&str, &str); 3] = [
    ("client_api", "CONCLAVE_CLIENT_API__LISTEN"),
    ("http", "CONCLAVE_HTTP__LISTEN"),
    ("federation", "CONCLAVE_FEDERATION__LISTEN"),
];

/// Container fields that change nothing of the process this harness runs
/// (scheduling, resources, security settings the image already satisfies,
/// probes, which the test reads itself where it needs them).
const IGNORED_CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "ports",
    "resources",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
];

/// Container fields this harness carries out.
const UNDERSTOOD_CONTAINER_FIELDS: &[&str] = &[
    "command",
    "args",
    "env",
    "envFrom",
    "volumeMounts",
    "workingDir",
];

/// Pod spec fields that change nothing of the processes (scheduling, the
/// pod's security context, grace periods).
const IGNORED_POD_FIELDS: &[&str] = &[
    "serviceAccountName",
    "automountServiceAccountToken",
    "securityContext",
    "affinity",
    "topologySpreadConstraints",
    "nodeSelector",
    "tolerations",
    "priorityClassName",
    "terminationGracePeriodSeconds",
    "restartPolicy",
    "imagePullSecrets",
    "dnsPolicy",
];

/// Pod spec fields this harness carries out.
const UNDERSTOOD_POD_FIELDS: &[&str] = &[
    "containers",
    "initContainers",
    "volumes",
    "enableServiceLinks",
];

/// The Secrets a test makes for the pods, as an operator makes those a
/// release names with `existingSecret`: by Secret name (for `secretKeyRef`
/// and Secret volumes), or by the mount path of a Secret volume whatever its
/// name. What the test does not make comes from the Secrets the release
/// renders (made from values); what neither has fails the test.
#[derive(Debug, Clone, Default)]
pub struct SecretValues {
    /// Secret name -> its data (key -> value).
    by_name: BTreeMap<String, BTreeMap<String, String>>,
    /// A Secret volume's mount path -> its files (key -> contents).
    by_mount: BTreeMap<String, BTreeMap<String, String>>,
}

impl SecretValues {
    pub fn new() -> SecretValues {
        SecretValues::default()
    }

    /// The Secret `name` with `data` (key -> value), e.g. `conclave-database`
    /// with `url`.
    pub fn secret<'a>(
        mut self,
        name: &str,
        data: impl IntoIterator<Item = (&'a str, String)>,
    ) -> SecretValues {
        self.by_name
            .entry(name.to_owned())
            .or_default()
            .extend(data.into_iter().map(|(key, value)| (key.to_owned(), value)));
        self
    }

    /// The files of the Secret volume mounted at `mount_path` (e.g.
    /// `/etc/conclave/federation/` with `tls.crt` and `tls.key`).
    pub fn mounted_at<'a>(
        mut self,
        mount_path: &str,
        files: impl IntoIterator<Item = (&'a str, String)>,
    ) -> SecretValues {
        self.by_mount.insert(
            normalise_path(mount_path),
            files
                .into_iter()
                .map(|(key, contents)| (key.to_owned(), contents))
                .collect(),
        );
        self
    }
}

/// A rendered release: its manifests and namespace, to look objects up by
/// name.
pub struct RenderedRelease<'a> {
    manifests: &'a [Manifest],
    namespace: String,
}

impl<'a> RenderedRelease<'a> {
    pub fn new(manifests: &'a [Manifest], namespace: &str) -> RenderedRelease<'a> {
        RenderedRelease {
            manifests,
            namespace: namespace.to_owned(),
        }
    }

    pub fn manifests(&self) -> &'a [Manifest] {
        self.manifests
    }

    /// The one Deployment of the release; panics unless there is exactly one.
    pub fn deployment(&self) -> &'a Manifest {
        let deployments: Vec<&Manifest> = self
            .manifests
            .iter()
            .filter(|manifest| manifest.kind() == "Deployment")
            .collect();
        match deployments.as_slice() {
            [deployment] => deployment,
            other => panic!(
                "the release renders {} Deployments, the harness runs exactly one",
                other.len()
            ),
        }
    }

    /// The Jobs that are Helm hooks of `hook` (`pre-install`), in the order
    /// Helm runs them: by `helm.sh/hook-weight`, then by name.
    pub fn hook_jobs(&self, hook: &str) -> Vec<&'a Manifest> {
        let mut jobs: Vec<(i64, &Manifest)> = self
            .manifests
            .iter()
            .filter(|manifest| manifest.kind() == "Job")
            .filter(|manifest| {
                annotation(manifest, "helm.sh/hook")
                    .is_some_and(|hooks| hooks.split(',').any(|name| name.trim() == hook))
            })
            .map(|manifest| {
                let weight = annotation(manifest, "helm.sh/hook-weight").map_or(0, |weight| {
                    weight.trim().parse().unwrap_or_else(|_| {
                        panic!(
                            "Job {}'s helm.sh/hook-weight {weight:?} is no integer",
                            manifest.name()
                        )
                    })
                });
                (weight, manifest)
            })
            .collect();
        jobs.sort_by(|(left_weight, left), (right_weight, right)| {
            left_weight
                .cmp(right_weight)
                .then_with(|| left.name().cmp(right.name()))
        });
        jobs.into_iter().map(|(_, manifest)| manifest).collect()
    }

    /// The rendered object of `kind` named `name`, if the release renders it.
    fn object(&self, kind: &str, name: &str) -> Option<&'a Value> {
        self.manifests
            .iter()
            .find(|manifest| manifest.kind() == kind && manifest.name() == name)
            .map(|manifest| &manifest.object)
    }

    /// The Kubernetes service links (`NAME_SERVICE_HOST`, `NAME_PORT`, ...)
    /// of the release's Services, which a pod's containers get unless
    /// `enableServiceLinks` is false; cluster addresses made up from
    /// 10.96.0.0/16, stable per Service.
    fn service_links(&self) -> Vec<(String, String)> {
        let mut links = Vec::new();
        let services = self
            .manifests
            .iter()
            .filter(|manifest| manifest.kind() == "Service");
        for (number, service) in services.enumerate() {
            if service.object["spec"]["clusterIP"].as_str() == Some("None") {
                continue;
            }
            let prefix = service.name().to_uppercase().replace('-', "_");
            let address = format!("10.96.{}.{}", number / 250, number % 250 + 1);
            let ports = service.object["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (index, port) in ports.iter().enumerate() {
                let number = port["port"].as_u64().unwrap_or_else(|| {
                    panic!("Service {} has a port without a number", service.name())
                });
                let protocol = port["protocol"].as_str().unwrap_or("TCP");
                let url = format!("{}://{address}:{number}", protocol.to_lowercase());
                if index == 0 {
                    links.push((format!("{prefix}_SERVICE_HOST"), address.clone()));
                    links.push((format!("{prefix}_SERVICE_PORT"), number.to_string()));
                    links.push((format!("{prefix}_PORT"), url.clone()));
                }
                if let Some(name) = port["name"].as_str() {
                    let name = name.to_uppercase().replace('-', "_");
                    links.push((format!("{prefix}_SERVICE_PORT_{name}"), number.to_string()));
                }
                let base = format!("{prefix}_PORT_{number}_{protocol}");
                links.push((base.clone(), url));
                links.push((format!("{base}_PROTO"), protocol.to_lowercase()));
                links.push((format!("{base}_PORT"), number.to_string()));
                links.push((format!("{base}_ADDR"), address.clone()));
            }
        }
        links
    }
}

/// One pod of a rendered pod template, on this machine: its name, its
/// loopback address, and a directory for its volumes.
pub struct LocalPod<'a> {
    release: &'a RenderedRelease<'a>,
    /// The pod template's `spec`.
    spec: &'a Value,
    name: String,
    host: Ipv4Addr,
    secrets: SecretValues,
    /// Volumes and working directories of its containers.
    directory: tempfile::TempDir,
    /// Its `emptyDir` volumes by name, shared by its containers as in a pod.
    empty_dirs: BTreeMap<String, PathBuf>,
}

/// A container of a [`LocalPod`], ready to run: the program and what it is
/// given.
#[derive(Debug, Clone)]
pub struct LocalContainer {
    /// The container's name in the pod spec.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment of the process.
    pub env: Vec<(String, String)>,
    pub current_dir: PathBuf,
    /// The container's mounts: rendered mount path -> local path, longest
    /// first.
    pub mounts: Vec<(String, PathBuf)>,
}

/// Where a pod's homeserver listens locally, by rendered container port.
#[derive(Debug, Clone)]
pub struct LocalListeners {
    /// Configuration table (`client_api`) -> local address.
    pub by_table: BTreeMap<String, SocketAddr>,
    /// Rendered port (`7480`) -> local address.
    pub by_rendered_port: BTreeMap<u16, SocketAddr>,
}

impl<'a> LocalPod<'a> {
    /// The pod `name` of the pod template `pod_template` (a Deployment's or
    /// a Job's `spec.template`), at `host`; panics on a pod spec field it
    /// does not understand.
    pub fn new(
        release: &'a RenderedRelease<'a>,
        pod_template: &'a Value,
        name: &str,
        host: Ipv4Addr,
        secrets: &SecretValues,
    ) -> LocalPod<'a> {
        let spec = &pod_template["spec"];
        let fields = spec
            .as_object()
            .unwrap_or_else(|| panic!("pod {name}'s template has no spec"));
        for field in fields.keys() {
            assert!(
                UNDERSTOOD_POD_FIELDS.contains(&field.as_str())
                    || IGNORED_POD_FIELDS.contains(&field.as_str()),
                "pod {name}'s spec has {field:?}, which the rendered-pod harness does not \
                 know how to run; teach test-support/src/rendered_pod.rs about it"
            );
        }
        let directory = tempfile::Builder::new()
            .prefix("conclave-pod-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let mut empty_dirs = BTreeMap::new();
        for volume in array(&spec["volumes"]) {
            if volume.get("emptyDir").is_some() {
                let volume_name = string(volume, "name", "a volume");
                let path = directory.path().join("empty-dirs").join(volume_name);
                create_directory(&path);
                empty_dirs.insert(volume_name.to_owned(), path);
            }
        }
        LocalPod {
            release,
            spec,
            name: name.to_owned(),
            host,
            secrets: secrets.clone(),
            directory,
            empty_dirs,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's directory (its volumes), to keep while its processes run.
    pub fn into_directory(self) -> tempfile::TempDir {
        self.directory
    }

    pub fn host(&self) -> Ipv4Addr {
        self.host
    }

    /// The pod's init containers, in order.
    pub fn init_containers(&self) -> Vec<LocalContainer> {
        array(&self.spec["initContainers"])
            .iter()
            .map(|container| self.container(container))
            .collect()
    }

    /// The pod's container named `name`; panics listing the names if there
    /// is none.
    pub fn container_named(&self, name: &str) -> LocalContainer {
        let containers = array(&self.spec["containers"]);
        let container = containers
            .iter()
            .find(|container| container["name"].as_str() == Some(name))
            .unwrap_or_else(|| {
                let names: Vec<&str> = containers
                    .iter()
                    .filter_map(|container| container["name"].as_str())
                    .collect();
                panic!(
                    "pod {} has no container {name:?} among {names:?}",
                    self.name
                )
            });
        self.container(container)
    }

    /// The pod's only container (a Job's); panics unless there is one.
    pub fn only_container(&self) -> LocalContainer {
        match array(&self.spec["containers"]).as_slice() {
            [container] => self.container(container),
            other => panic!(
                "pod {} has {} containers, expected one",
                self.name,
                other.len()
            ),
        }
    }

    /// The rendered container spec named `name` (for its probes and ports).
    pub fn container_spec(&self, name: &str) -> &'a Value {
        array(&self.spec["containers"])
            .iter()
            .find(|container| container["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("pod {} has no container {name:?}", self.name))
    }

    /// `container` of this pod made local: its volumes materialised in
    /// directories of its own, its environment resolved.
    fn container(&self, container: &Value) -> LocalContainer {
        let name = string(container, "name", "a container").to_owned();
        let fields = container
            .as_object()
            .unwrap_or_else(|| panic!("container {name} is no object"));
        for field in fields.keys() {
            assert!(
                UNDERSTOOD_CONTAINER_FIELDS.contains(&field.as_str())
                    || IGNORED_CONTAINER_FIELDS.contains(&field.as_str()),
                "container {name} of pod {} has {field:?}, which the rendered-pod harness \
                 does not know how to run; teach test-support/src/rendered_pod.rs about it",
                self.name
            );
        }
        let root = self.directory.path().join("containers").join(&name);
        let mut mounts = self.mounts(container, &root);
        mounts.sort_by_key(|(mount_path, _)| std::cmp::Reverse(mount_path.len()));
        // Files first, rewritten with every mount of this container known.
        self.write_volumes(container, &mounts, &root);
        let env = self.environment(container, &mounts);
        let expand = |text: &str| rewrite_path(&expand_variables(text, &env), &mounts);
        let command: Vec<String> = strings(&container["command"]);
        let rendered_args: Vec<String> = strings(&container["args"]);
        let (program, args) = match command.split_first() {
            Some((program, rest)) => {
                let mut args: Vec<String> = rest.iter().map(|arg| expand(arg)).collect();
                args.extend(rendered_args.iter().map(|arg| expand(arg)));
                (program.clone(), args)
            }
            None if container.get("args").is_some() => (
                IMAGE_ENTRYPOINT.to_owned(),
                rendered_args.iter().map(|arg| expand(arg)).collect(),
            ),
            None => (
                IMAGE_ENTRYPOINT.to_owned(),
                IMAGE_CMD.iter().map(|arg| (*arg).to_owned()).collect(),
            ),
        };
        let program = match program.rsplit('/').next() {
            Some("conclave-homeserver") => homeserver_binary(),
            Some("conclave") => client_binary(),
            _ => panic!(
                "container {name} runs {program:?}; the image holds conclave-homeserver and \
                 conclave only"
            ),
        };
        let working_directory = container["workingDir"]
            .as_str()
            .unwrap_or(IMAGE_WORKDIR)
            .to_owned();
        let current_dir = match find_mount(&working_directory, &mounts) {
            Some(local) => local,
            // Outside any volume: the image's empty, read-only directory.
            None => {
                let path = root.join("workdir");
                create_directory(&path);
                path
            }
        };
        LocalContainer {
            name,
            program,
            args,
            env,
            current_dir,
            mounts,
        }
    }

    /// `container`'s mounts: rendered mount path -> local path (under the
    /// container's `root` for ConfigMap and Secret volumes, the pod's
    /// directory for `emptyDir`).
    fn mounts(&self, container: &Value, root: &Path) -> Vec<(String, PathBuf)> {
        array(&container["volumeMounts"])
            .iter()
            .map(|mount| {
                for field in mount
                    .as_object()
                    .into_iter()
                    .flat_map(|object| object.keys())
                {
                    assert!(
                        ["name", "mountPath", "readOnly", "subPath"].contains(&field.as_str()),
                        "a volume mount of pod {} has {field:?}, which the harness does not \
                         know: {mount}",
                        self.name
                    );
                }
                let volume = string(mount, "name", "a volume mount");
                let mount_path = normalise_path(string(mount, "mountPath", "a volume mount"));
                let volume_directory = self
                    .empty_dirs
                    .get(volume)
                    .cloned()
                    .unwrap_or_else(|| root.join("volumes").join(volume));
                let local = match mount["subPath"].as_str() {
                    Some(sub_path) => volume_directory.join(sub_path),
                    None => volume_directory,
                };
                (mount_path, local)
            })
            .collect()
    }

    /// Writes the files of `container`'s ConfigMap and Secret volumes, TOML
    /// files with their mount paths rewritten.
    fn write_volumes(&self, container: &Value, mounts: &[(String, PathBuf)], root: &Path) {
        let mut written = Vec::new();
        for mount in array(&container["volumeMounts"]) {
            let volume_name = string(mount, "name", "a volume mount");
            if written.contains(&volume_name) || self.empty_dirs.contains_key(volume_name) {
                continue;
            }
            written.push(volume_name);
            let mount_path = normalise_path(string(mount, "mountPath", "a volume mount"));
            let volume = array(&self.spec["volumes"])
                .into_iter()
                .find(|volume| volume["name"].as_str() == Some(volume_name))
                .unwrap_or_else(|| {
                    panic!(
                        "pod {} mounts volume {volume_name}, which its spec does not declare",
                        self.name
                    )
                });
            let files = self.volume_files(volume, &mount_path);
            let directory = root.join("volumes").join(volume_name);
            create_directory(&directory);
            for (file, contents) in files {
                let contents = if file.ends_with(".toml") {
                    rewrite_toml(&contents, mounts)
                } else {
                    contents
                };
                let path = directory.join(&file);
                if let Some(parent) = path.parent() {
                    create_directory(parent);
                }
                std::fs::write(&path, contents)
                    .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
            }
        }
    }

    /// The files of `volume` (file name -> contents), mounted at
    /// `mount_path`.
    fn volume_files(&self, volume: &Value, mount_path: &str) -> BTreeMap<String, String> {
        let name = string(volume, "name", "a volume");
        let sources: Vec<&str> = volume
            .as_object()
            .into_iter()
            .flat_map(|object| object.keys())
            .map(String::as_str)
            .filter(|key| *key != "name")
            .collect();
        match sources.as_slice() {
            ["configMap"] => self.config_map_files(&volume["configMap"], name),
            ["secret"] => self.secret_files(&volume["secret"], name, mount_path),
            ["projected"] => {
                let mut files = BTreeMap::new();
                for source in array(&volume["projected"]["sources"]) {
                    if let Some(config_map) = source.get("configMap") {
                        files.extend(self.config_map_files(config_map, name));
                    } else if let Some(secret) = source.get("secret") {
                        files.extend(self.secret_files(secret, name, mount_path));
                    } else {
                        panic!(
                            "projected volume {name} of pod {} has a source the harness \
                             cannot make local: {source}",
                            self.name
                        );
                    }
                }
                files
            }
            other => panic!(
                "volume {name} of pod {} is {other:?}, which the harness cannot make local",
                self.name
            ),
        }
    }

    /// A ConfigMap volume's files: the rendered ConfigMap's data (its
    /// `items` only, under their paths, when listed).
    fn config_map_files(&self, source: &Value, volume: &str) -> BTreeMap<String, String> {
        let config_map_name = string(source, "name", "a configMap volume");
        let Some(config_map) = self.release.object("ConfigMap", config_map_name) else {
            assert!(
                source["optional"].as_bool() == Some(true),
                "volume {volume} of pod {} mounts ConfigMap {config_map_name}, which the \
                 release does not render",
                self.name
            );
            return BTreeMap::new();
        };
        let data: BTreeMap<String, String> = config_map["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| {
                let text = value
                    .as_str()
                    .unwrap_or_else(|| panic!("ConfigMap {config_map_name}'s {key} is no string"));
                (key.clone(), text.to_owned())
            })
            .collect();
        assert!(
            config_map.get("binaryData").is_none(),
            "ConfigMap {config_map_name} has binaryData, which the harness does not mount"
        );
        select_items(source, data, &format!("ConfigMap {config_map_name}"))
    }

    /// A Secret volume's files: those the test supplies for `mount_path`,
    /// else the rendered Secret's data (a Secret the chart makes from
    /// values); its `items` only, when listed.
    fn secret_files(
        &self,
        source: &Value,
        volume: &str,
        mount_path: &str,
    ) -> BTreeMap<String, String> {
        let secret_name = string(source, "secretName", "a secret volume");
        let given = self
            .secrets
            .by_mount
            .get(mount_path)
            .or_else(|| self.secrets.by_name.get(secret_name));
        let data = match given {
            Some(files) => files.clone(),
            None => match self.release.object("Secret", secret_name) {
                Some(secret) => rendered_secret_data(secret, secret_name),
                None if source["optional"].as_bool() == Some(true) => return BTreeMap::new(),
                None => panic!(
                    "volume {volume} of pod {} mounts Secret {secret_name} at {mount_path}, \
                     which the release does not render and the test does not make \
                     (SecretValues::secret or ::mounted_at)",
                    self.name
                ),
            },
        };
        select_items(source, data, &format!("Secret {secret_name}"))
    }

    /// `container`'s environment as Kubernetes sets it: service links, then
    /// `envFrom`, then `env` in order (each may use `$(NAME)` of those
    /// before it), its paths rewritten to the local mounts.
    fn environment(
        &self,
        container: &Value,
        mounts: &[(String, PathBuf)],
    ) -> Vec<(String, String)> {
        let container_name = string(container, "name", "a container");
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            env.retain(|(existing, _)| *existing != name);
            env.push((name, value));
        };
        if self.spec["enableServiceLinks"].as_bool() != Some(false) {
            for (name, value) in self.release.service_links() {
                set(&mut env, name, value);
            }
        }
        for source in array(&container["envFrom"]) {
            let prefix = source["prefix"].as_str().unwrap_or_default();
            let Some(config_map) = source.get("configMapRef") else {
                panic!(
                    "container {container_name} of pod {} takes envFrom {source}, which the \
                     harness cannot fill",
                    self.name
                );
            };
            let config_map_name = string(config_map, "name", "a configMapRef");
            let object = self
                .release
                .object("ConfigMap", config_map_name)
                .unwrap_or_else(|| {
                    panic!("envFrom names ConfigMap {config_map_name}, which is not rendered")
                });
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                let value = value.as_str().unwrap_or_default().to_owned();
                set(&mut env, format!("{prefix}{key}"), value);
            }
        }
        for variable in array(&container["env"]) {
            let name = string(variable, "name", "an environment variable").to_owned();
            let value = if let Some(value) = variable.get("value") {
                let text = value
                    .as_str()
                    .unwrap_or_else(|| panic!("env {name}'s value {value} is no string"));
                expand_variables(text, &env)
            } else if let Some(source) = variable.get("valueFrom") {
                self.value_from(&name, source)
            } else {
                String::new()
            };
            let value = rewrite_path(&value, mounts);
            set(&mut env, name, value);
        }
        env
    }

    /// An environment variable's `valueFrom`.
    fn value_from(&self, name: &str, source: &Value) -> String {
        if let Some(reference) = source.get("secretKeyRef") {
            let key = string(reference, "key", "a secretKeyRef");
            let secret_name = string(reference, "name", "a secretKeyRef");
            if let Some(data) = self.secrets.by_name.get(secret_name) {
                return data.get(key).cloned().unwrap_or_else(|| {
                    panic!(
                        "env {name} of pod {} takes key {key:?} of Secret {secret_name}, which \
                         the test made with the keys {:?} only",
                        self.name,
                        data.keys().collect::<Vec<_>>()
                    )
                });
            }
            // A Secret the chart makes from values (`database.url`): as
            // rendered, which the test set with the values.
            let rendered = self
                .release
                .object("Secret", secret_name)
                .map(|secret| rendered_secret_data(secret, secret_name));
            return match rendered.and_then(|mut data| data.remove(key)) {
                Some(value) => value,
                None => panic!(
                    "env {name} of pod {} takes key {key:?} of Secret {secret_name}, which the \
                     release does not render and the test does not make (SecretValues::secret)",
                    self.name
                ),
            };
        }
        if let Some(reference) = source.get("configMapKeyRef") {
            let key = string(reference, "key", "a configMapKeyRef");
            let config_map_name = string(reference, "name", "a configMapKeyRef");
            let config_map = self
                .release
                .object("ConfigMap", config_map_name)
                .unwrap_or_else(|| {
                    panic!("env {name} names ConfigMap {config_map_name}, which is not rendered")
                });
            return config_map["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap {config_map_name} has no key {key:?}"))
                .to_owned();
        }
        if let Some(reference) = source.get("fieldRef") {
            let field = string(reference, "fieldPath", "a fieldRef");
            return match field {
                "metadata.name" => self.name.clone(),
                "metadata.namespace" => self.release.namespace.clone(),
                "status.podIP" => self.host.to_string(),
                other => panic!(
                    "env {name} of pod {} takes field {other:?}, which the harness cannot fill",
                    self.name
                ),
            };
        }
        panic!(
            "env {name} of pod {} comes from {source}, which the harness cannot fill",
            self.name
        )
    }
}

impl LocalContainer {
    /// The file given after `--config`, if any.
    pub fn config_file(&self) -> Option<PathBuf> {
        self.args
            .iter()
            .position(|arg| arg == "--config")
            .and_then(|index| self.args.get(index + 1))
            .map(PathBuf::from)
            .or_else(|| {
                self.args
                    .iter()
                    .find_map(|arg| arg.strip_prefix("--config="))
                    .map(PathBuf::from)
            })
    }

    /// The rendered value of an environment variable.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
    }

    /// Moves the homeserver's listeners to free ports of `host`, by the
    /// `CONCLAVE_*__LISTEN` variables; returns where each listens now, by
    /// table and by the port it had as rendered (from the environment, else
    /// from the configuration file, else the homeserver's default).
    pub fn listen_locally(&mut self, host: Ipv4Addr) -> LocalListeners {
        let config: toml::Table = match self.config_file() {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
                text.parse().unwrap_or_else(|error| {
                    panic!("the rendered {} is no TOML: {error}", path.display())
                })
            }
            None => toml::Table::new(),
        };
        for (table, value) in &config {
            if value.get("listen").is_some() {
                assert!(
                    LISTENERS.iter().any(|(known, _)| known == table),
                    "the rendered configuration has a listener [{table}] the harness does not \
                     know; add it to LISTENERS in test-support/src/rendered_pod.rs"
                );
            }
        }
        let defaults = conclave_homeserver::config::Config::default();
        let mut listeners = LocalListeners {
            by_table: BTreeMap::new(),
            by_rendered_port: BTreeMap::new(),
        };
        for (table, variable) in LISTENERS {
            let rendered = self
                .env_value(variable)
                .map(str::to_owned)
                .or_else(|| {
                    config
                        .get(table)
                        .and_then(|section| section.get("listen"))
                        .and_then(toml::Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| match table {
                    "client_api" => defaults.client_api.listen.to_string(),
                    "http" => defaults.http.listen.to_string(),
                    _ => defaults.federation.listen.to_string(),
                });
            let rendered: SocketAddr = rendered.parse().unwrap_or_else(|error| {
                panic!("the rendered [{table}] listen {rendered:?} is no address: {error}")
            });
            let local = free_address(host);
            listeners.by_table.insert(table.to_owned(), local);
            listeners.by_rendered_port.insert(rendered.port(), local);
            self.env.retain(|(name, _)| name != variable);
            self.env.push((variable.to_owned(), local.to_string()));
        }
        listeners
    }

    /// Runs the container to its end (at most [`RUN_TO_END_TIMEOUT`]) and
    /// returns its output; panics if it cannot start or does not end.
    pub async fn run_to_end(&self) -> Output {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .current_dir(&self.current_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let what = format!(
            "container {} ({} {:?})",
            self.name,
            self.program.display(),
            self.args
        );
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
        tokio::time::timeout(RUN_TO_END_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{what} did not end within {RUN_TO_END_TIMEOUT:?}"))
            .unwrap_or_else(|error| panic!("cannot wait for {what}: {error}"))
    }

    /// Runs it to its end and panics, with its output, unless it exits 0;
    /// returns its standard output.
    pub async fn run_successfully(&self) -> String {
        let output = self.run_to_end().await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "container {} ({} {:?}) failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            self.name,
            self.program.display(),
            self.args,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// The local address of the container port `port` (a number, or the name
/// of one of `container`'s ports), by the rendered port numbers of
/// `listeners`.
pub fn local_port(container: &Value, port: &Value, listeners: &LocalListeners) -> SocketAddr {
    let number = match port {
        Value::Number(number) => number
            .as_u64()
            .and_then(|number| u16::try_from(number).ok())
            .unwrap_or_else(|| panic!("port {number} is out of range")),
        Value::String(name) => array(&container["ports"])
            .iter()
            .find(|declared| declared["name"].as_str() == Some(name))
            .and_then(|declared| declared["containerPort"].as_u64())
            .and_then(|number| u16::try_from(number).ok())
            .unwrap_or_else(|| {
                panic!(
                    "the container declares no port named {name:?}: {}",
                    container["ports"]
                )
            }),
        other => panic!("{other} names no port"),
    };
    *listeners.by_rendered_port.get(&number).unwrap_or_else(|| {
        panic!(
            "container port {number} is none of the homeserver's listeners as rendered \
                 ({:?})",
            listeners.by_rendered_port.keys().collect::<Vec<_>>()
        )
    })
}

/// `source`'s `items` of `data` under their paths, or all of `data`.
fn select_items(
    source: &Value,
    data: BTreeMap<String, String>,
    what: &str,
) -> BTreeMap<String, String> {
    let Some(items) = source.get("items") else {
        return data;
    };
    array(items)
        .iter()
        .map(|item| {
            let key = string(item, "key", "an item");
            let path = string(item, "path", "an item");
            let contents = data
                .get(key)
                .unwrap_or_else(|| {
                    panic!("{what} has no key {key:?} (its keys: {:?})", data.keys())
                })
                .clone();
            (path.to_owned(), contents)
        })
        .collect()
}

/// A rendered Secret's `data` (base64) and `stringData`.
fn rendered_secret_data(secret: &Value, name: &str) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    for (key, value) in secret["data"].as_object().into_iter().flatten() {
        let encoded = value.as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_else(|error| panic!("Secret {name}'s {key} is no base64: {error}"));
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|_| panic!("Secret {name}'s {key} is no UTF-8 text"));
        data.insert(key.clone(), text);
    }
    for (key, value) in secret["stringData"].as_object().into_iter().flatten() {
        data.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
    }
    data
}

/// Kubernetes's `$(NAME)` expansion of a command, argument or environment
/// value by the variables defined before it; `$$` is a literal `$`, and a
/// reference to an undefined variable stays as it is.
pub fn expand_variables(text: &str, env: &[(String, String)]) -> String {
    let mut expanded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        expanded.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            expanded.push('$');
            rest = tail;
        } else if let Some(reference) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
        {
            let (name, tail) = reference;
            match env.iter().rev().find(|(defined, _)| defined == name) {
                Some((_, value)) => expanded.push_str(value),
                None => {
                    expanded.push_str("$(");
                    expanded.push_str(name);
                    expanded.push(')');
                }
            }
            rest = tail;
        } else {
            expanded.push('$');
            rest = after;
        }
    }
    expanded.push_str(rest);
    expanded
}

/// `text` with a leading mount path replaced by its local directory, if it
/// is a path under one of `mounts` (longest first); anything else as it is.
fn rewrite_path(text: &str, mounts: &[(String, PathBuf)]) -> String {
    match find_mount(text, mounts) {
        Some(local) => local.to_string_lossy().into_owned(),
        None => text.to_owned(),
    }
}

/// The local path of `path` if it is under one of `mounts` (longest first).
fn find_mount(path: &str, mounts: &[(String, PathBuf)]) -> Option<PathBuf> {
    mounts.iter().find_map(|(mount_path, local)| {
        if path == mount_path || path.strip_suffix('/') == Some(mount_path) {
            Some(local.clone())
        } else {
            path.strip_prefix(mount_path.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|rest| local.join(rest))
        }
    })
}

/// A TOML file's text with every string that is a path under a mount
/// rewritten; the text as it is when none is.
fn rewrite_toml(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|error| panic!("a mounted TOML file does not parse: {error}\n{text}"));
    let mut changed = false;
    rewrite_toml_table(&mut table, mounts, &mut changed);
    if changed {
        table.to_string()
    } else {
        text.to_owned()
    }
}

fn rewrite_toml_table(table: &mut toml::Table, mounts: &[(String, PathBuf)], changed: &mut bool) {
    for (_, value) in table.iter_mut() {
        rewrite_toml_value(value, mounts, changed);
    }
}

fn rewrite_toml_value(value: &mut toml::Value, mounts: &[(String, PathBuf)], changed: &mut bool) {
    match value {
        toml::Value::String(text) => {
            if let Some(local) = find_mount(text, mounts) {
                *text = local.to_string_lossy().into_owned();
                *changed = true;
            }
        }
        toml::Value::Array(values) => {
            for value in values {
                rewrite_toml_value(value, mounts, changed);
            }
        }
        toml::Value::Table(table) => rewrite_toml_table(table, mounts, changed),
        _ => {}
    }
}

/// A mount path without a trailing `/`.
fn normalise_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn annotation<'a>(manifest: &'a Manifest, name: &str) -> Option<&'a str> {
    manifest.object["metadata"]["annotations"][name].as_str()
}

/// The elements of a JSON array (none for a missing field).
fn array(value: &Value) -> Vec<&Value> {
    value
        .as_array()
        .map(|values| values.iter().collect())
        .unwrap_or_default()
}

/// A JSON array of strings (empty for a missing field).
fn strings(value: &Value) -> Vec<String> {
    array(value)
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("{item} is no string"))
                .to_owned()
        })
        .collect()
}

/// `object[field]` as a string; panics naming `what` when missing.
fn string<'a>(object: &'a Value, field: &str, what: &str) -> &'a str {
    object[field]
        .as_str()
        .unwrap_or_else(|| panic!("{what} has no {field}: {object}"))
}

fn create_directory(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
}
