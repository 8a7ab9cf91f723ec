//! `quartzite new`: writes a job project in Rust, Python or JavaScript.
//!
//! The project lives wherever the author wants it, outside this repository:
//! source with a working `run` (typed data, a log line, kv), a native test, a
//! manifest that schedules it, and a README naming the one build command. The
//! templates are compiled into the binary (`host/templates/new/`); the SDKs
//! they depend on are found in the checkout the binary was built from, or in
//! `--sdk DIR` / `QUARTZITE_SDK_DIR` (a directory holding `guest-sdk/`,
//! `guest-sdk-python/` and `guest-sdk-js/`). Nothing is ever overwritten: a
//! directory that exists and is not empty is refused.

use super::{EXIT_FAILED, EXIT_USAGE, fail};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The language of a new job project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The job's name: lowercase letters, digits, `_` and `-` (it is also the
    /// module name `describe()` reports).
    pub name: String,
    /// The language of the job.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Where to write the project [default: ./NAME]. Must not exist, or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Quartzite checkout whose SDKs the project depends on [default: the
    /// checkout this binary was built from].
    #[arg(long, env = "QUARTZITE_SDK_DIR")]
    pub sdk: Option<PathBuf>,
}

/// One template file: where it goes in the project, and its text.
struct Template {
    path: &'static str,
    text: &'static str,
}

macro_rules! template {
    ($lang:literal, $file:literal => $path:literal) => {
        Template {
            path: $path,
            text: include_str!(concat!("../../templates/new/", $lang, "/", $file)),
        }
    };
}

const RUST: &[Template] = &[
    template!("rust", "Cargo.toml" => "Cargo.toml"),
    template!("rust", "src/lib.rs" => "src/lib.rs"),
    template!("rust", "README.md" => "README.md"),
    template!("rust", "jobs.toml" => "jobs.toml"),
    template!("rust", "gitignore" => ".gitignore"),
];

const PYTHON: &[Template] = &[
    template!("python", "job.py" => "job.py"),
    template!("python", "test_job.py" => "test_job.py"),
    template!("python", "requirements.txt" => "requirements.txt"),
    template!("python", "README.md" => "README.md"),
    template!("python", "jobs.toml" => "jobs.toml"),
    template!("python", "gitignore" => ".gitignore"),
];

const JS: &[Template] = &[
    template!("js", "job.js" => "job.js"),
    template!("js", "job.test.js" => "job.test.js"),
    template!("js", "package.json" => "package.json"),
    template!("js", "README.md" => "README.md"),
    template!("js", "jobs.toml" => "jobs.toml"),
    template!("js", "gitignore" => ".gitignore"),
];

impl Lang {
    fn templates(self) -> &'static [Template] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
        }
    }

    /// The SDK directory under a checkout.
    fn sdk_dir(self) -> &'static str {
        match self {
            Lang::Rust => "guest-sdk",
            Lang::Python => "guest-sdk-python",
            Lang::Js => "guest-sdk-js",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// The component a project's build command writes, relative to the project.
fn wasm_path(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Rust => format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        Lang::Python | Lang::Js => format!("{name}.wasm"),
    }
}

/// The commands that build a project, as its README gives them.
fn build_commands(lang: Lang) -> &'static [&'static str] {
    match lang {
        Lang::Rust => &["cargo build --release --target wasm32-wasip2"],
        Lang::Python => &[
            "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt",
            "python -m quartzite_sdk.build job.py -o NAME.wasm",
        ],
        Lang::Js => &["npm install", "npm run build"],
    }
}

/// `my-job` -> `MyJob`: the job's type or class name.
fn type_name(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(['-', '_']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "Job");
    }
    out
}

fn render(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// The checkout whose SDKs a project depends on, checked to hold the one `lang` needs.
fn find_sdk(args: &NewArgs) -> Result<PathBuf, String> {
    let (root, from) = match &args.sdk {
        Some(dir) => (dir.clone(), "--sdk"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
            "the checkout this binary was built from",
        ),
    };
    let sdk = root.join(args.lang.sdk_dir());
    let marker = match args.lang {
        Lang::Rust => "Cargo.toml",
        Lang::Python => "pyproject.toml",
        Lang::Js => "package.json",
    };
    if !sdk.join(marker).is_file() {
        return Err(format!(
            "no {} SDK at {} ({from}); pass --sdk DIR, a Quartzite checkout holding {}/",
            args.lang.label(),
            sdk.display(),
            args.lang.sdk_dir()
        ));
    }
    std::fs::canonicalize(&sdk).map_err(|e| format!("{}: {e}", sdk.display()))
}

/// Runs `quartzite new`.
pub fn run(args: NewArgs, json: bool) -> ExitCode {
    if let Err(reason) = crate::domain::check_module_name(&args.name) {
        return fail(
            EXIT_USAGE,
            &format!("job name {:?} is not acceptable: {reason}", args.name),
        );
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if let Ok(mut entries) = std::fs::read_dir(&dir)
        && entries.next().is_some()
    {
        return fail(
            EXIT_USAGE,
            &format!(
                "{} exists and is not empty: choose another --dir (nothing was written)",
                dir.display()
            ),
        );
    }
    if dir.exists() && !dir.is_dir() {
        return fail(
            EXIT_USAGE,
            &format!("{} exists and is not a directory", dir.display()),
        );
    }
    let sdk = match find_sdk(&args) {
        Ok(sdk) => sdk,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let sdk_text = sdk.display().to_string();
    let wasm = wasm_path(args.lang, &args.name);
    let vars = [
        ("name", args.name.clone()),
        ("crate", args.name.clone()),
        ("type_name", type_name(&args.name)),
        ("sdk_rust", sdk_text.clone()),
        ("sdk_python", sdk_text.clone()),
        ("sdk_js", sdk_text),
        ("wasm_rust", wasm.clone()),
        ("wasm_python", wasm.clone()),
        ("wasm_js", wasm.clone()),
    ];
    let mut written = Vec::new();
    for template in args.lang.templates() {
        let path = dir.join(template.path);
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, render(template.text, &vars)));
        if let Err(e) = result {
            return fail(
                EXIT_FAILED,
                &format!("cannot write {}: {e}", path.display()),
            );
        }
        written.push(template.path);
    }
    let build: Vec<String> = build_commands(args.lang)
        .iter()
        .map(|c| c.replace("NAME", &args.name))
        .collect();
    if json {
        outln!(
            "{}",
            json!({
                "dir": dir,
                "lang": args.lang.label(),
                "files": written,
                "sdk": sdk,
                "build": build,
                "component": wasm,
            })
        );
    } else {
        outln!(
            "wrote a {} job project in {}: {}",
            args.lang.label(),
            dir.display(),
            written.join(", ")
        );
        outln!("next, in {}:", dir.display());
        for command in &build {
            outln!("  {command}");
        }
        outln!("  quartzite run-once {wasm}");
        outln!("  quartzite serve --manifest jobs.toml");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_identifiers() {
        assert_eq!(type_name("my-job"), "MyJob");
        assert_eq!(type_name("report_v2"), "ReportV2");
        assert_eq!(type_name("9lives"), "Job9lives");
    }

    #[test]
    fn every_placeholder_of_every_template_is_filled() {
        let vars: Vec<(&str, String)> = [
            "name",
            "crate",
            "type_name",
            "sdk_rust",
            "sdk_python",
            "sdk_js",
            "wasm_rust",
            "wasm_python",
            "wasm_js",
        ]
        .into_iter()
        .map(|k| (k, "x".to_string()))
        .collect();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for t in lang.templates() {
                let out = render(t.text, &vars);
                assert!(!out.contains("{{"), "{} leaves a placeholder", t.path);
            }
        }
    }
}
