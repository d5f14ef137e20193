//! The deployment cannot drift from the code: the CronJob's command line is one the real
//! loader accepts, every environment variable the manifests set is one the binaries read,
//! every secret key they use is in the example secrets, probes and Services point at the
//! ports the servers listen on, and the Dockerfile copies paths and builds binaries that exist.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use clap::{CommandFactory, Parser};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn documents(relative: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn base() -> Vec<Yaml> {
    let kustomization = &documents("deploy/k8s/base/kustomization.yaml")[0];
    kustomization["resources"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|file| documents(&format!("deploy/k8s/base/{}", file.as_str().unwrap())))
        .collect()
}

fn find<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s/base"))
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map(|v| {
            v.iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{s:?}"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Environment variables a clap command (and its subcommands) reads.
fn env_names(command: &clap::Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for sub in command.get_subcommands() {
        names.extend(env_names(sub));
    }
    // Read by the log filter and by OpenTelemetry rather than by the command line.
    names.insert("RUST_LOG".to_owned());
    names.extend(
        invest_cli::trace::ENVIRONMENT
            .iter()
            .map(|n| (*n).to_owned()),
    );
    names
}

/// The pod spec of a Deployment or of a CronJob.
fn pod_spec<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    let workload = find(docs, kind, name);
    match kind {
        "CronJob" => &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &workload["spec"]["template"]["spec"],
    }
}

/// Every variable the manifests give a container: its `env` and the keys of the ConfigMaps
/// of its `envFrom`.
fn container_env(docs: &[Yaml], container: &Yaml) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = container["env"]
        .as_vec()
        .map(|v| {
            v.iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    for source in container["envFrom"].as_vec().into_iter().flatten() {
        let config = find(
            docs,
            "ConfigMap",
            source["configMapRef"]["name"].as_str().unwrap(),
        );
        for key in config["data"].as_hash().unwrap().keys() {
            names.insert(key.as_str().unwrap().to_owned());
        }
    }
    names
}

fn config_value<'a>(docs: &'a [Yaml], container: &Yaml, key: &str) -> Option<&'a str> {
    container["envFrom"]
        .as_vec()
        .into_iter()
        .flatten()
        .find_map(|source| {
            find(
                docs,
                "ConfigMap",
                source["configMapRef"]["name"].as_str().unwrap(),
            )["data"][key]
                .as_str()
        })
}

#[test]
fn the_cronjob_command_line_is_accepted_by_the_loader() {
    let docs = base();
    let container = &pod_spec(&docs, "CronJob", "loader")["containers"][0];
    let command = strings(&container["command"]);
    assert_eq!(command, ["/usr/local/bin/loader"]);
    let args = strings(&container["args"]);
    let cli =
        loader::cli::Cli::try_parse_from(std::iter::once("loader".to_owned()).chain(args.clone()))
            .unwrap_or_else(|e| panic!("the CronJob's arguments {args:?} are refused:\n{e}"));
    assert!(
        matches!(cli.command, loader::cli::Command::Load(_)),
        "the CronJob runs `load`"
    );
    let cronjob = find(&docs, "CronJob", "loader");
    assert_eq!(cronjob["spec"]["timeZone"].as_str(), Some("Asia/Seoul"));
    assert_eq!(
        cronjob["spec"]["concurrencyPolicy"].as_str(),
        Some("Forbid")
    );
}

#[test]
fn every_variable_the_manifests_set_is_read_by_its_binary() {
    let docs = base();
    let workloads: [(&str, &str, clap::Command); 3] = [
        (
            "Deployment",
            "portfolio-svc",
            portfolio_svc::Config::command(),
        ),
        ("Deployment", "deposit-svc", deposit_svc::Config::command()),
        ("CronJob", "loader", loader::cli::Cli::command()),
    ];
    for (kind, name, command) in workloads {
        let read = env_names(&command);
        let container = &pod_spec(&docs, kind, name)["containers"][0];
        let set = container_env(&docs, container);
        let unknown: Vec<_> = set.difference(&read).collect();
        assert!(
            unknown.is_empty(),
            "{name}: the manifests set {unknown:?}, which {name} does not read"
        );
        assert!(
            set.contains("INVEST_JWT_SECRET_FILE"),
            "{name} gets the JWT secret"
        );
    }
}

#[test]
fn secret_keys_exist_and_ports_line_up() {
    let docs = base();
    let example =
        std::fs::read_to_string(repo().join("deploy/k8s/overlays/production/secrets.env.example"))
            .unwrap();
    let keys: BTreeSet<&str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut used = BTreeSet::new();
    for (kind, name) in [
        ("Deployment", "portfolio-svc"),
        ("Deployment", "deposit-svc"),
        ("CronJob", "loader"),
    ] {
        let spec = pod_spec(&docs, kind, name);
        for env in spec["containers"][0]["env"].as_vec().into_iter().flatten() {
            if let Some(key) = env["valueFrom"]["secretKeyRef"]["key"].as_str() {
                used.insert(key.to_owned());
            }
        }
        for volume in spec["volumes"].as_vec().into_iter().flatten() {
            for item in volume["secret"]["items"].as_vec().into_iter().flatten() {
                used.insert(item["key"].as_str().unwrap().to_owned());
            }
        }
    }
    for key in &used {
        assert!(
            keys.contains(key.as_str()),
            "secret key {key} is not in secrets.env.example"
        );
    }

    let listens: BTreeMap<&str, (&str, &str)> = BTreeMap::from([
        (
            "portfolio-svc",
            ("PORTFOLIO_LISTEN", "PORTFOLIO_METRICS_LISTEN"),
        ),
        ("deposit-svc", ("DEPOSIT_LISTEN", "DEPOSIT_METRICS_LISTEN")),
    ]);
    for (name, (listen, metrics)) in listens {
        let container = &pod_spec(&docs, "Deployment", name)["containers"][0];
        let port_of = |key: &str| -> i64 {
            config_value(&docs, container, key)
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let ports: BTreeMap<String, i64> = container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["containerPort"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports["grpc"],
            port_of(listen),
            "{name}: container port vs {listen}"
        );
        assert_eq!(
            ports["http-metrics"],
            port_of(metrics),
            "{name}: metrics port vs {metrics}"
        );
        assert_eq!(
            container["readinessProbe"]["grpc"]["port"].as_i64(),
            Some(ports["grpc"])
        );
        assert_eq!(
            container["livenessProbe"]["grpc"]["service"].as_str(),
            Some("liveness")
        );
        assert_eq!(
            container["command"][0].as_str(),
            Some(format!("/usr/local/bin/{name}").as_str())
        );
        let service = find(&docs, "Service", name);
        for port in service["spec"]["ports"].as_vec().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(
                ports.contains_key(target),
                "{name}: Service targets an unknown port {target}"
            );
        }
    }
}

#[test]
fn the_dockerfile_copies_what_exists_and_builds_our_binaries() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let dockerignore =
        std::fs::read_to_string(repo().join("deploy/Dockerfile.dockerignore")).unwrap();
    let metadata = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let binaries: BTreeSet<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    // The image ships the two servers and the loader; loadgen is a benchmark tool.
    let services: BTreeSet<String> = BTreeSet::from([
        "portfolio-svc".into(),
        "deposit-svc".into(),
        "loader".into(),
    ]);
    assert!(services.is_subset(&binaries), "{binaries:?}");

    let mut shipped = BTreeSet::new();
    for line in dockerfile.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("COPY ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            if parts[0].starts_with("--from=") && !parts[0].starts_with("--from=builder") {
                // Between build stages (the cargo-chef recipe).
                continue;
            }
            if parts[0].starts_with("--from=builder") {
                let source = parts[1];
                let binary = source.rsplit('/').next().unwrap();
                assert!(source.contains("/target/release/"), "{line}");
                assert!(
                    binaries.contains(binary),
                    "{line}: {binary} is not a binary of the workspace"
                );
                assert_eq!(parts[2], format!("/usr/local/bin/{binary}"), "{line}");
                shipped.insert(binary.to_owned());
            } else {
                for source in &parts[..parts.len() - 1] {
                    assert!(
                        repo().join(source).exists(),
                        "{line}: {source} does not exist in the repository"
                    );
                    // The build context lets in only what the ignore file lets back in.
                    let let_in = [format!("!{source}"), format!("!{source}/**")];
                    assert!(
                        dockerignore
                            .lines()
                            .any(|rule| let_in.iter().any(|l| rule.trim() == l)),
                        "{line}: deploy/Dockerfile.dockerignore does not let {source} into the build context"
                    );
                }
            }
        }
        if line.contains("cargo build") {
            for binary in &services {
                assert!(
                    line.contains(&format!("--bin {binary}")),
                    "{line} does not build {binary}"
                );
            }
        }
    }
    assert_eq!(
        shipped, services,
        "the image ships the services and the loader"
    );
    // Every member crate is copied into the build.
    for member in metadata["workspace_members"].as_array().unwrap() {
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["id"] == member)
            .unwrap();
        let dir = Path::new(package["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap();
        let relative = dir.strip_prefix(repo()).unwrap().to_str().unwrap();
        assert!(
            dockerfile.contains(&format!("COPY {relative} {relative}")),
            "the Dockerfile does not copy {relative}"
        );
    }
}
