//! Podman for the image tests, with the configuration `scripts/container-images`
//! writes (runc, cgroupfs, storage of our own, short names resolved to the
//! locally made base images): the runtime image built from binaries compiled
//! already, and containers of it, each removed when its guard drops, even when
//! the test fails. Missing podman or base images fail the test with the
//! command that installs them; nothing is skipped.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::chart::repository_root;

/// Environment variable naming the directory of our podman configuration, as
/// `scripts/container-images` reads it.
pub const PODMAN_DIRECTORY_VARIABLE: &str = "CONCLAVE_PODMAN_DIR";

/// Where `scripts/container-images` keeps our podman configuration and image
/// storage unless [`PODMAN_DIRECTORY_VARIABLE`] says otherwise.
pub const DEFAULT_PODMAN_DIRECTORY: &str = "/var/lib/conclave-podman";

/// The base image of the Dockerfile's runtime stage, made locally.
pub const DEBIAN_BASE_IMAGE: &str = "localhost/debian:bookworm-slim";

/// The command that installs podman and makes the base images.
const INSTALL_COMMAND: &str = "scripts/container-images (scripts/services runs it)";

/// The directory of our podman configuration.
fn podman_directory() -> PathBuf {
    std::env::var_os(PODMAN_DIRECTORY_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PODMAN_DIRECTORY))
}

/// A `podman` command with our configuration; panics with the installing
/// command when podman or the configuration is missing.
pub fn podman() -> tokio::process::Command {
    let directory = podman_directory();
    let containers_conf = directory.join("containers.conf");
    let storage_conf = directory.join("storage.conf");
    let registries_conf = directory.join("registries.conf");
    for file in [&containers_conf, &storage_conf, &registries_conf] {
        assert!(
            file.is_file(),
            "{} is missing: the image tests run podman with the configuration of \
             scripts/container-images; make it (and install podman) with\n    {INSTALL_COMMAND}",
            file.display()
        );
    }
    let mut command = tokio::process::Command::new("podman");
    command
        .env("CONTAINERS_CONF", containers_conf)
        .env("CONTAINERS_STORAGE_CONF", storage_conf)
        .env("CONTAINERS_REGISTRIES_CONF", registries_conf)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `podman ARGS` to its end; panics when podman cannot start (with the
/// installing command).
pub async fn podman_output(args: &[&str]) -> Output {
    let mut command = podman();
    command.args(args);
    run(command, args).await
}

/// Runs `podman ARGS`, which must succeed; returns its stdout.
pub async fn podman_success(args: &[&str]) -> String {
    let output = podman_output(args).await;
    assert!(
        output.status.success(),
        "podman {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn run(mut command: tokio::process::Command, args: &[&str]) -> Output {
    command.output().await.unwrap_or_else(|error| {
        panic!(
            "cannot run podman {}: {error}; install podman and make the base images with\n    {INSTALL_COMMAND}",
            args.join(" ")
        )
    })
}

/// Panics, with the command that makes it, unless the Dockerfile's runtime
/// base image is in our storage (nothing can be pulled here).
pub async fn assert_base_image_present() {
    let output = podman_output(&["image", "exists", DEBIAN_BASE_IMAGE]).await;
    assert!(
        output.status.success(),
        "the base image {DEBIAN_BASE_IMAGE} is missing (no registry is reachable, it is made \
         locally); make it with\n    {INSTALL_COMMAND}"
    );
}

/// Labels and arguments of a runtime-only image build.
#[derive(Clone, Debug)]
pub struct RuntimeBuild {
    /// `--build-arg VERSION`: the workspace's version, which the Dockerfile
    /// checks against the binary's.
    pub version: String,
    /// `--build-arg REVISION`.
    pub revision: String,
    /// The two binaries: `conclave-homeserver` and `conclave`.
    pub homeserver_binary: PathBuf,
    pub client_binary: PathBuf,
}

/// An image of this test run, removed (with the layers only it uses) when
/// dropped.
#[derive(Debug)]
pub struct TestImage {
    /// `localhost/conclave-homeserver-test:<random>`.
    tag: String,
}

impl TestImage {
    /// Builds the Dockerfile's `runtime` stage with the build context
    /// `binaries` set to a directory holding `build`'s two binaries, so the
    /// compiling stage is not built, under a tag of its own.
    pub async fn build_runtime(build: &RuntimeBuild) -> TestImage {
        assert_base_image_present().await;
        let binaries = tempfile::tempdir().expect("a directory for the image's binaries");
        place(
            &build.homeserver_binary,
            &binaries.path().join("conclave-homeserver"),
        );
        place(&build.client_binary, &binaries.path().join("conclave"));
        let image = TestImage {
            tag: format!("localhost/conclave-homeserver-test:{}", random_hex()),
        };
        let root = repository_root();
        let binaries_context = format!("binaries={}", binaries.path().display());
        let version = format!("VERSION={}", build.version);
        let revision = format!("REVISION={}", build.revision);
        let dockerfile = root.join("Dockerfile");
        let root = root.display().to_string();
        let dockerfile = dockerfile.display().to_string();
        podman_success(&[
            "build",
            "--pull=never",
            "--network",
            "host",
            "--force-rm",
            "--quiet",
            "--target",
            "runtime",
            "--build-context",
            &binaries_context,
            "--build-arg",
            &version,
            "--build-arg",
            &revision,
            "--file",
            &dockerfile,
            "--tag",
            &image.tag,
            &root,
        ])
        .await;
        image
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `podman image inspect`: the image's JSON object (its `Config` holds
    /// user, labels, ports, entrypoint...).
    pub async fn inspect(&self) -> Value {
        let json = podman_success(&["image", "inspect", &self.tag]).await;
        let mut images: Vec<Value> = serde_json::from_str(&json)
            .unwrap_or_else(|error| panic!("podman image inspect printed no JSON list: {error}"));
        assert_eq!(images.len(), 1, "podman image inspect {}", self.tag);
        images.remove(0)
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        remove_quietly(&["rmi", "--force", &self.tag]);
    }
}

/// A container of this test run, removed (with its anonymous volumes) when
/// dropped.
#[derive(Debug)]
pub struct TestContainer {
    name: String,
}

impl TestContainer {
    /// `podman run --detach --name <random> ARGS`: `args` holds the options,
    /// the image and the command.
    pub async fn start(args: &[&str]) -> TestContainer {
        let container = TestContainer {
            name: format!("conclave-test-{}", random_hex()),
        };
        let mut run_args = vec!["run", "--detach", "--name", &container.name];
        run_args.extend_from_slice(args);
        podman_success(&run_args).await;
        container
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `podman container inspect`: the container's JSON object (`State`
    /// holds its status and exit code).
    pub async fn inspect(&self) -> Value {
        let json = podman_success(&["container", "inspect", &self.name]).await;
        let mut containers: Vec<Value> = serde_json::from_str(&json).unwrap_or_else(|error| {
            panic!("podman container inspect printed no JSON list: {error}")
        });
        assert_eq!(
            containers.len(),
            1,
            "podman container inspect {}",
            self.name
        );
        containers.remove(0)
    }

    /// Whether the container's process still runs.
    pub async fn is_running(&self) -> bool {
        self.inspect().await["State"]["Running"].as_bool() == Some(true)
    }

    /// What the container printed (stdout and stderr), for failure messages.
    pub async fn logs(&self) -> String {
        let output = podman_output(&["logs", &self.name]).await;
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        remove_quietly(&["rm", "--force", "--volumes", "--time", "0", &self.name]);
    }
}

/// Runs `podman ARGS` to its end from a guard's drop (which cannot await),
/// reporting a failure on stderr rather than panicking in a panic.
fn remove_quietly(args: &[&str]) {
    let directory = podman_directory();
    let result = std::process::Command::new("podman")
        .env("CONTAINERS_CONF", directory.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", directory.join("storage.conf"))
        .env(
            "CONTAINERS_REGISTRIES_CONF",
            directory.join("registries.conf"),
        )
        .args(args)
        .output();
    match result {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "podman {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => eprintln!("cannot run podman {}: {error}", args.join(" ")),
    }
}

/// Puts `source` at `destination`: a hard link when both are on one file
/// system, a copy otherwise.
fn place(source: &Path, destination: &Path) {
    if std::fs::hard_link(source, destination).is_err() {
        std::fs::copy(source, destination).unwrap_or_else(|error| {
            panic!(
                "cannot copy {} to {}: {error}",
                source.display(),
                destination.display()
            )
        });
    }
}

/// 16 random hex digits, for names of this test run.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    hex::encode(bytes)
}
