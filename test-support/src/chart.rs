//! The Helm chart (`helm/conclave`) rendered offline, and the Python tools the
//! chart and image tests run: Helm 4 as a library (`helm/tools/chart.py`),
//! `kubernetes-validate` and `hadolint`, from the checkout's `.venv` that
//! `scripts/services` makes. A missing tool fails the test with the command
//! that installs it; nothing is skipped.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root directory.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support is one level below the repository root")
        .to_path_buf()
}

/// The chart's directory, `helm/conclave`.
pub fn chart_directory() -> PathBuf {
    repository_root().join("helm/conclave")
}

/// The values files of the chart's CI matrix, `helm/conclave/ci/*-values.yaml`
/// (the chart-testing convention), sorted by name.
pub fn ci_values_files() -> Vec<PathBuf> {
    let directory = chart_directory().join("ci");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with("-values.yaml"))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *-values.yaml in {}",
        directory.display()
    );
    files
}

/// A program installed in the checkout's `.venv/bin` (`python`,
/// `kubernetes-validate`, `hadolint`); panics with the installing command
/// when it is missing.
pub fn python_tool(name: &str) -> PathBuf {
    let path = repository_root().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: the chart and image tests need the Python tools of \
         scripts/python-requirements.txt; install them with\n    scripts/services",
        path.display()
    );
    path
}

/// One rendered YAML document: the template it came from
/// (`conclave/templates/deployment.yaml`) and the object.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub template: String,
    pub object: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// What to render: values files in order, then `--set-json` overrides
/// (`("replicas", json!(3))`), as `helm install -f ... --set-json ...`.
#[derive(Clone, Debug, Default)]
pub struct Render {
    pub values_files: Vec<PathBuf>,
    pub overrides: Vec<(String, Value)>,
    /// Release name; `conclave` when unset.
    pub release: Option<String>,
    /// Namespace; `conclave` when unset.
    pub namespace: Option<String>,
}

impl Render {
    pub fn values(file: impl Into<PathBuf>) -> Self {
        Self {
            values_files: vec![file.into()],
            ..Self::default()
        }
    }

    pub fn set(mut self, path: &str, value: Value) -> Self {
        self.overrides.push((path.to_owned(), value));
        self
    }

    /// The rendered manifests, or Helm's message (a value the schema refuses,
    /// a template that fails).
    pub fn run(&self) -> Result<Vec<Manifest>, String> {
        let output = run(&mut self.release_command("render"));
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let documents: Vec<Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("chart.py render printed no JSON array: {error}"));
        Ok(documents
            .into_iter()
            .map(|mut document| Manifest {
                template: document["template"]
                    .as_str()
                    .expect("each document names its template")
                    .to_owned(),
                object: document["object"].take(),
            })
            .collect())
    }

    /// The rendered `templates/NOTES.txt` (what `helm install` prints), or
    /// Helm's message.
    pub fn notes(&self) -> Result<String, String> {
        let output = run(&mut self.release_command("notes"));
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// `helm lint --strict` with these values: `Err` with every finding.
    pub fn lint(&self) -> Result<(), String> {
        let output = run(&mut self.chart_command("lint"));
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// [`Self::chart_command`] for a release: its name and namespace.
    fn release_command(&self, subcommand: &str) -> Command {
        let mut command = self.chart_command(subcommand);
        command
            .arg("--name")
            .arg(self.release.as_deref().unwrap_or("conclave"))
            .arg("--namespace")
            .arg(self.namespace.as_deref().unwrap_or("conclave"));
        command
    }

    fn chart_command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(python_tool("python"));
        command
            .arg(repository_root().join("helm/tools/chart.py"))
            .arg(subcommand)
            .arg(chart_directory());
        for file in &self.values_files {
            command.arg("--values").arg(file);
        }
        for (path, value) in &self.overrides {
            command.arg("--set-json").arg(format!("{path}={value}"));
        }
        command
    }
}

/// Runs `command` to its end; panics when it cannot start.
fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

/// The first manifest of `kind` whose name ends with `name_suffix` (names
/// start with the release's full name); panics listing what was rendered.
pub fn find<'a>(manifests: &'a [Manifest], kind: &str, name_suffix: &str) -> &'a Manifest {
    manifests
        .iter()
        .find(|manifest| manifest.kind() == kind && manifest.name().ends_with(name_suffix))
        .unwrap_or_else(|| {
            let rendered: Vec<String> = manifests
                .iter()
                .map(|manifest| format!("{} {}", manifest.kind(), manifest.name()))
                .collect();
            panic!("no {kind} named *{name_suffix} among {rendered:?}")
        })
}

/// Writes each manifest to a file of its own in `directory`
/// (`NN-kind-name.yaml`, JSON being YAML), for the validators that read files;
/// returns the paths in the manifests' order.
pub fn write_manifests(manifests: &[Manifest], directory: &Path) -> Vec<PathBuf> {
    manifests
        .iter()
        .enumerate()
        .map(|(index, manifest)| {
            let path = directory.join(format!(
                "{index:02}-{}-{}.yaml",
                manifest.kind().to_lowercase(),
                manifest.name()
            ));
            let text = serde_json::to_string_pretty(&manifest.object).expect("a JSON value");
            std::fs::write(&path, text)
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
            path
        })
        .collect()
}

/// Runs a program of the checkout's `.venv` (`python_tool`) with `arguments`
/// and returns its exit status's success with everything it printed.
pub fn run_python_tool<I, S>(name: &str, arguments: I) -> (bool, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = run(Command::new(python_tool(name)).args(arguments));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}
