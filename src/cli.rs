//! The command line (OPERATIONS.md "CLI"). Store commands work on a stopped guard's data dir.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use policies::{CapInterval, CapScope, Currency, OnExceed};
use serde_json::json;
use store::{Actor, AgentId, AgentStatus, CapSpec, OrgId, Store};

use crate::config::Config;

/// Payment Guard: a policy-enforcing proxy between AI agents and Stripe.
#[derive(Debug, Parser)]
#[command(name = "payment-guard", version, about)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (overrides `store.data_dir`).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (and, later, the admin API and workers).
    Serve,
    /// Create an organization and its owner.
    Init {
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        /// Read the password from stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Validate and set policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Spending caps.
    #[command(subcommand)]
    Cap(CapCmd),
    /// The organization's Stripe key.
    #[command(subcommand)]
    Rail(RailCmd),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Intents.
    #[command(subcommand)]
    Intent(IntentCmd),
    /// The master key that seals stored secrets.
    #[command(subcommand)]
    Secrets(SecretsCmd),
}

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// With the guard stopped: re-seal every stored secret under a new master key (generated,
    /// or read as base64 from stdin) and put it where the configuration says the key lives.
    RotateMasterKey {
        /// Read the new key (base64 of 32 bytes) from stdin instead of generating one; required
        /// when the key comes from GUARD_SECRETS_MASTER_KEY.
        #[arg(long)]
        new_key_stdin: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Create an agent and print its token once.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent's token (final).
    Revoke(AgentRef),
    /// Freeze an agent.
    Freeze(AgentRef),
    /// Unfreeze an agent.
    Unfreeze(AgentRef),
}

#[derive(Debug, Args)]
pub struct AgentRef {
    #[arg(long)]
    org: String,
    #[arg(long)]
    agent: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check a Cedar file against the shipped schema.
    Validate { file: PathBuf },
    /// Validate and activate a policy set as a new version.
    Set {
        #[arg(long)]
        org: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the shipped Cedar schema.
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum CapCmd {
    /// Add a spending cap.
    Add {
        #[arg(long)]
        org: String,
        /// `org` or `agent:<id>`.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        currency: String,
        /// per_transaction, daily, weekly, monthly, all_time.
        #[arg(long)]
        interval: String,
        /// Minor units.
        #[arg(long)]
        limit: i64,
        #[arg(long, default_value = "hold")]
        on_exceed: String,
        #[arg(long)]
        json: bool,
    },
    /// List caps.
    List {
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RailCmd {
    /// Read the Stripe secret key from stdin and store it encrypted.
    Set {
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the hash chain(s); non-zero exit when broken.
    Verify {
        #[arg(long)]
        org: Option<String>,
    },
    /// JSON Lines to stdout.
    Export {
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntentCmd {
    /// JSON Lines of an organization's intents.
    List {
        #[arg(long)]
        org: String,
    },
}

/// Set up `tracing` (text or JSON) to stderr.
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(crate::config::LOG_FILTER_VAR)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if cli.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Run a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(d) = &cli.data_dir {
        cfg.store.data_dir = d.clone();
    }
    match cli.command {
        Command::Serve => crate::serve::serve(cfg),
        Command::Policy(PolicyCmd::Validate { file }) => policy_validate(&file),
        Command::Policy(PolicyCmd::Schema) => {
            print!("{}", policies::SCHEMA_TEXT);
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets(SecretsCmd::RotateMasterKey {
            new_key_stdin,
            json,
        }) => crate::secrets::rotate_master_key(&cfg, new_key_stdin, json),
        other => {
            let store = open_store(&cfg)?;
            store_command(&store, other)
        }
    }
}

/// Open the store of a stopped guard; a locked store or a wrong master key is a one-line error.
pub fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    crate::secrets::open_store(cfg)
}

fn org_id(s: &str) -> anyhow::Result<OrgId> {
    OrgId::parse(s).with_context(|| format!("not an organization id: {s}"))
}

fn cli_actor() -> Actor {
    Actor::System("cli".into())
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

fn store_command(store: &Store, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Init {
            org,
            email,
            password_stdin,
            json,
        } => init(store, &org, &email, password_stdin, json),
        Command::Agent(a) => agent(store, a),
        Command::Policy(PolicyCmd::Set { org, file, json }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match store.set_policy(&org_id(&org)?, &text, &cli_actor()) {
                Ok(v) if json => print_json(json!({"version": v})),
                Ok(v) => println!("policy version {v} is active"),
                Err(store::StoreError::PolicyRejected(diags)) => {
                    print_diagnostics(&file, &diags);
                    return Ok(ExitCode::from(1));
                }
                Err(e) => bail!("{e}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cap(CapCmd::Add {
            org,
            scope,
            currency,
            interval,
            limit,
            on_exceed,
            json,
        }) => {
            let spec = CapSpec {
                scope: scope
                    .parse::<CapScope>()
                    .map_err(|e| anyhow::anyhow!("--scope: {e}"))?,
                currency: Currency::parse(&currency)
                    .map_err(|e| anyhow::anyhow!("--currency: {e}"))?,
                interval: interval
                    .parse::<CapInterval>()
                    .map_err(|e| anyhow::anyhow!("--interval: {e}"))?,
                limit,
                on_exceed: on_exceed
                    .parse::<OnExceed>()
                    .map_err(|e| anyhow::anyhow!("--on-exceed: {e}"))?,
                operations: None,
            };
            let cap = store.add_cap(&org_id(&org)?, spec, &cli_actor())?;
            if json {
                print_json(json!({"cap_id": cap.id}))
            } else {
                println!("cap {} added", cap.id)
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cap(CapCmd::List { org }) => {
            for cap in store.list_caps(&org_id(&org)?)? {
                println!("{}", serde_json::to_string(&cap)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rail(RailCmd::Set { org }) => {
            let mut key = String::new();
            std::io::stdin().take(4096).read_to_string(&mut key)?;
            let info = store.set_rail_key(&org_id(&org)?, key.trim(), &cli_actor())?;
            println!(
                "rail key stored ({} mode, ending {})",
                info.mode, info.last4
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCmd::Verify { org }) => audit_verify(store, org),
        Command::Audit(AuditCmd::Export { org }) => {
            let mut out = std::io::stdout().lock();
            store.audit_export(&org_id(&org)?, |line| {
                out.write_all(line)
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(store::StoreError::from)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Intent(IntentCmd::List { org }) => {
            // A closed stdout (`| head`) is an error to report, not a panic as `println!` makes it.
            let mut out = std::io::stdout().lock();
            for i in store.list_intents(&org_id(&org)?)? {
                let mut v = serde_json::to_value(&i)?;
                if let Some(o) = v.as_object_mut() {
                    o.remove("request_body");
                    o.remove("response");
                }
                writeln!(out, "{v}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve
        | Command::Secrets(_)
        | Command::Policy(PolicyCmd::Validate { .. } | PolicyCmd::Schema) => {
            unreachable!("handled before opening the store")
        }
    }
}

fn init(
    store: &Store,
    org: &str,
    email: &str,
    password_stdin: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (password, generated) = if password_stdin {
        let mut p = String::new();
        std::io::stdin().take(1024).read_to_string(&mut p)?;
        (p.trim_end_matches(['\r', '\n']).to_string(), false)
    } else {
        (crate::serve::generate_password(), true)
    };
    let (org, user) = store.init_org_with_owner(org, email, &password)?;
    if json {
        let mut v = json!({"org_id": org.id, "user_id": user.id, "email": user.email});
        if generated {
            v["password"] = json!(password);
        }
        print_json(v);
    } else {
        println!("organization {} created; owner {}", org.id, user.email);
        if generated {
            println!("password (shown once): {password}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn agent(store: &Store, cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    let set = |r: AgentRef, status| -> anyhow::Result<ExitCode> {
        let agent =
            AgentId::parse(&r.agent).with_context(|| format!("not an agent id: {}", r.agent))?;
        store.set_agent_status(&org_id(&r.org)?, &agent, status, &cli_actor())?;
        Ok(ExitCode::SUCCESS)
    };
    match cmd {
        AgentCmd::Create { org, name, json } => {
            let (agent, token) =
                store.create_agent(&org_id(&org)?, &name, Vec::new(), &cli_actor())?;
            if json {
                print_json(json!({"agent_id": agent.id, "token": token}));
            } else {
                println!("agent {} created\ntoken (shown once): {token}", agent.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentCmd::Revoke(r) => set(r, AgentStatus::Revoked),
        AgentCmd::Freeze(r) => set(r, AgentStatus::Frozen),
        AgentCmd::Unfreeze(r) => set(r, AgentStatus::Active),
    }
}

fn print_diagnostics(file: &std::path::Path, diags: &[policies::Diagnostic]) {
    for d in diags {
        eprintln!("{}:{}:{}: {}", file.display(), d.line, d.column, d.message);
    }
}

fn policy_validate(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    match policies::compile(&text) {
        Ok(c) => {
            println!(
                "{}: valid ({} policies)",
                file.display(),
                c.policy_ids().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            print_diagnostics(file, &diags);
            Ok(ExitCode::from(1))
        }
    }
}

fn audit_verify(store: &Store, org: Option<String>) -> anyhow::Result<ExitCode> {
    let orgs = match org {
        Some(o) => vec![org_id(&o)?],
        None => store.org_ids()?,
    };
    let mut ok = true;
    for org in orgs {
        let report = store.audit_verify(&org)?;
        ok &= report.is_ok();
        let mut v = serde_json::to_value(&report)?;
        v["org"] = json!(org);
        print_json(v);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
