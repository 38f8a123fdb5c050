//! The `callflow` command line: check, simulate, graph and schema.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use clap::{Parser, Subcommand};

use callflow::diagnostic::Diagnostic;
use callflow::flow::render::{self, Format};
use callflow::flow::{load_paths, FlowSet, LoadOptions};
use callflow::simulate::{self, Answer, Simulation};

#[derive(Parser)]
#[command(
    name = "callflow",
    version,
    about = "IVR call flows: check, simulate, draw"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check flow files and directories; every problem with file:line:column.
    Check {
        /// Flow files or directories (default: flows).
        paths: Vec<PathBuf>,
        /// Where the prompt files are.
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
        /// Treat warnings (e.g. unreachable nodes) as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Run a flow with a scripted caller and print what happens.
    Simulate {
        /// A flow file (its directory is loaded, so `goto` works) or a flow name.
        flow: String,
        /// The directory of flows when FLOW is a name.
        #[arg(long, default_value = "flows")]
        flows: PathBuf,
        /// Where the prompt files are.
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
        /// The caller's number (ANI).
        #[arg(long, default_value = "+37120000099")]
        caller: String,
        /// The dialled number (DNIS).
        #[arg(long, default_value = "8000")]
        called: String,
        /// When the call happens: RFC 3339 (2026-11-25T10:00:00+02:00), or
        /// local time (2026-11-25T10:00) in --tz. Default: now.
        #[arg(long)]
        at: Option<String>,
        /// Time zone for a local --at.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// What the caller does: keys (1, 123#), `wait 6s`, `barge 0`, `hangup`, comma separated.
        #[arg(long, default_value = "")]
        input: String,
        /// What the ACD answers to a transfer.
        #[arg(long, value_enum, default_value = "ok")]
        transfer: Answer,
        /// What the callback store answers.
        #[arg(long, value_enum, default_value = "ok")]
        callback: Answer,
        /// A variable the server would provide, NAME=VALUE (repeatable),
        /// e.g. `--var wait_general=300`.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Draw a flow as DOT, Mermaid or SVG.
    Graph {
        /// A flow file (its directory is loaded) or a flow name.
        flow: String,
        /// The directory of flows when FLOW is a name.
        #[arg(long, default_value = "flows")]
        flows: PathBuf,
        /// Where the prompt files are.
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "svg")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the JSON Schema of flow files (for editor completion).
    Schema,
    /// Work on the callback requests (the same database the server uses,
    /// also while it runs).
    Callbacks {
        /// The callback database: a SQLite file, or a postgres:// URL.
        #[arg(long, default_value = "callbacks.db", global = true)]
        db: PathBuf,
        #[command(subcommand)]
        action: CallbacksAction,
    },
    /// Answer SIP calls and run the flows (default: the shipped flows on
    /// 127.0.0.1:5060). SIGTERM drains calls; SIGHUP reloads the flows.
    Serve(ServeArgs),
    /// What callers did in the flows, from call records (one node's file,
    /// or several nodes' files together): containment, abandonment and
    /// where, transfers and callbacks by queue, time to an agent, keys.
    Report {
        /// Call-record files (JSON lines).
        #[arg(required = true)]
        records: Vec<PathBuf>,
        /// Only calls that started since: RFC 3339, YYYY-MM-DD, or an age (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// The flows, drawn in the HTML with the figures on them.
        #[arg(long, default_value = "flows")]
        flows: PathBuf,
        /// Where the flows' prompt files are.
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// How `report` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    /// For a terminal.
    Text,
    /// For other tools.
    Json,
    /// One page with each flow drawn and its figures on it.
    Html,
}

#[allow(clippy::too_many_arguments)]
fn report(
    records: &[PathBuf],
    since: Option<&str>,
    flow: Option<String>,
    format: ReportFormat,
    flows: &Path,
    prompts: &Path,
    output: Option<&Path>,
) -> Result<ExitCode> {
    #[allow(clippy::disallowed_methods)] // the command line reads the clock
    let now = chrono::Utc::now();
    let since = since
        .map(|s| callflow::report::parse_since(s, now))
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let mut inputs = Vec::with_capacity(records.len());
    for path in records {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        inputs.push((path.display().to_string(), std::io::BufReader::new(file)));
    }
    let filter = callflow::report::Filter { since, flow };
    let report = callflow::report::build(inputs, &filter)?;
    let text = match format {
        ReportFormat::Text => report.to_text(),
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Html => {
            let loaded = load_paths(
                &[flows.to_path_buf()],
                &LoadOptions {
                    prompts_dir: prompts.to_path_buf(),
                },
            );
            match loaded.into_result() {
                Ok((set, _)) => report.to_html(Some(&set), None),
                Err(diagnostics) => {
                    let note = format!(
                        "No diagrams: the flows in {} have {} error(s); `callflow check` tells which.",
                        flows.display(),
                        diagnostics.iter().filter(|d| d.is_error()).count()
                    );
                    eprintln!("{note}");
                    report.to_html(None, Some(&note))
                }
            }
        }
    };
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `callbacks` does.
#[derive(Subcommand)]
enum CallbacksAction {
    /// List requests, newest last.
    List {
        /// Only this state: pending, dialling, connected, completed, failed, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
    },
    /// One request with its context and every attempt.
    Show {
        /// The request's id.
        id: i64,
    },
    /// Cancel a pending request.
    Cancel {
        /// The request's id.
        id: i64,
    },
    /// Make a failed or cancelled request due again now.
    Retry {
        /// The request's id.
        id: i64,
    },
}

fn callbacks(db: &Path, action: CallbacksAction) -> Result<ExitCode> {
    use callflow::callback::ListFilter;
    use callflow::server::backend::{is_postgres, Backend};
    let location = db.to_string_lossy();
    let postgres = is_postgres(&location);
    if !postgres && !db.exists() {
        bail!(
            "{} does not exist (the server creates it on its first start)",
            db.display()
        );
    }
    // A URL may hold a password: not in messages.
    let shown = if postgres {
        "the PostgreSQL callback store".to_string()
    } else {
        db.display().to_string()
    };
    let mut store = Backend::open(&location).with_context(|| format!("cannot open {shown}"))?;
    #[allow(clippy::disallowed_methods)] // the CLI is the IO edge
    let now = Utc::now();
    match action {
        CallbacksAction::List { state, queue } => {
            let state = state
                .map(|s| s.parse().map_err(|e| anyhow!("{e}")))
                .transpose()?;
            let list = store.list(&ListFilter {
                state,
                queue,
                limit: None,
            })?;
            println!("    id  state      number           queue        prio attempts  requested                 note");
            for c in &list {
                println!(
                    "{:>6}  {:<10} {:<16} {:<12} {:>4} {:>8}  {:<25} {}",
                    c.id,
                    c.state.as_str(),
                    c.number,
                    c.queue,
                    c.priority,
                    c.attempts,
                    c.requested_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    c.last_error.as_deref().unwrap_or("")
                );
            }
            eprintln!("{} request(s)", list.len());
        }
        CallbacksAction::Show { id } => {
            let c = store.get(id)?;
            let time =
                |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            println!("id:         {}", c.id);
            println!("state:      {}", c.state);
            println!("number:     {}", c.number);
            println!("queue:      {} (priority {})", c.queue, c.priority);
            println!("requested:  {}", time(c.requested_at));
            if let Some(t) = c.not_before {
                println!("not before: {}", time(t));
            }
            if let Some(t) = c.not_after {
                println!("not after:  {}", time(t));
            }
            if !c.state.is_final() {
                println!("next:       {}", time(c.next_attempt_at));
            }
            if let Some(note) = &c.last_error {
                println!("note:       {note}");
            }
            for (k, v) in &c.context {
                println!("context:    {k}={v}");
            }
            for (n, a) in store.attempts(id)?.iter().enumerate() {
                println!(
                    "attempt {}:  {} .. {}  {}",
                    n + 1,
                    time(a.started_at),
                    a.ended_at
                        .map(time)
                        .unwrap_or_else(|| "(in progress)".into()),
                    a.result.as_deref().unwrap_or("")
                );
            }
        }
        CallbacksAction::Cancel { id } => {
            store.cancel(id, now)?;
            println!("callback {id} cancelled");
        }
        CallbacksAction::Retry { id } => {
            store.retry(id, now)?;
            println!("callback {id} is due again");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `serve`; each overrides the configuration file.
#[derive(clap::Args)]
struct ServeArgs {
    /// A YAML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// SIP UDP address to listen on (repeatable).
    #[arg(long)]
    listen: Vec<std::net::SocketAddr>,
    /// Address advertised in Via/Contact (NAT).
    #[arg(long)]
    advertise: Option<std::net::SocketAddr>,
    /// Address advertised in SDP for RTP.
    #[arg(long)]
    rtp_address: Option<std::net::IpAddr>,
    /// RTP port range, e.g. 20000-29999.
    #[arg(long)]
    rtp_ports: Option<String>,
    /// The flows directory.
    #[arg(long)]
    flows: Option<PathBuf>,
    /// The prompts directory.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// The call-record file (JSON lines).
    #[arg(long)]
    call_records: Option<PathBuf>,
    /// The callback database (SQLite).
    #[arg(long)]
    callbacks: Option<PathBuf>,
    /// The flow for dialled numbers without a route.
    #[arg(long)]
    default_flow: Option<String>,
    /// A route, NUMBER=FLOW (repeatable).
    #[arg(long = "route", value_name = "NUMBER=FLOW")]
    routes: Vec<String>,
    /// Drain time after SIGTERM, e.g. 30s.
    #[arg(long)]
    drain: Option<String>,
    /// End calls after this long without RTP from the caller, e.g. 60s.
    #[arg(long)]
    rtp_timeout: Option<String>,
    /// Ring (180) this long before answering, e.g. 2s.
    #[arg(long)]
    answer_delay: Option<String>,
    /// Call workers per listen address (default: one per CPU core).
    #[arg(long)]
    workers: Option<usize>,
    /// Take SIP over TCP too, on the same addresses and ports.
    #[arg(long)]
    tcp: bool,
    /// This node's name in the call records (default: the host name).
    #[arg(long)]
    node: Option<String>,
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    use callflow::flow::duration::FlowDuration;
    use callflow::server::config::ServerConfig;
    let mut config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    if let Some(v) = args.node {
        config.node = Some(v);
    }
    if let Some(v) = args.advertise {
        config.advertise = Some(v);
    }
    if let Some(v) = args.rtp_address {
        config.rtp_address = Some(v);
    }
    if let Some(v) = args.rtp_ports {
        config.rtp_ports = v;
    }
    if let Some(v) = args.flows {
        config.flows = v;
    }
    if let Some(v) = args.prompts {
        config.prompts = v;
    }
    if let Some(v) = args.call_records {
        config.call_records = v;
    }
    if let Some(v) = args.callbacks {
        config.callbacks = v;
    }
    if let Some(v) = args.default_flow {
        config.default_flow = v;
    }
    for route in &args.routes {
        let (number, flow) = route
            .split_once('=')
            .ok_or_else(|| anyhow!("--route `{route}`: write NUMBER=FLOW"))?;
        config.routes.insert(number.to_string(), flow.to_string());
    }
    if let Some(v) = &args.drain {
        config.drain = FlowDuration::parse(v).map_err(|e| anyhow!("--drain: {e}"))?;
    }
    if let Some(v) = &args.rtp_timeout {
        config.rtp_timeout = FlowDuration::parse(v).map_err(|e| anyhow!("--rtp-timeout: {e}"))?;
    }
    if let Some(v) = &args.answer_delay {
        config.answer_delay = FlowDuration::parse(v).map_err(|e| anyhow!("--answer-delay: {e}"))?;
    }
    if args.workers.is_some() {
        config.workers = args.workers;
    }
    if args.tcp {
        config.tcp = true;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(callflow::server::serve(config))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // Log lines go to stderr from a thread of their own: a slow terminal,
    // pipe or journal must never stall the tasks that pace RTP. When that
    // thread falls 128k lines behind, lines are dropped rather than block.
    // The guard flushes what is queued when main returns.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("callflow: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

/// Loads the flows a command is about and names the one it means.
fn load_for(flow: &str, flows: &Path, prompts: &Path) -> Result<(Arc<FlowSet>, u32)> {
    let file = Path::new(flow);
    let (dir, by_file) = if file.is_file() {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (dir.to_path_buf(), true)
    } else {
        (flows.to_path_buf(), false)
    };
    let loaded = load_paths(
        &[dir],
        &LoadOptions {
            prompts_dir: prompts.to_path_buf(),
        },
    );
    let (set, warnings) = match loaded.into_result() {
        Ok(ok) => ok,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics);
            bail!("the flows have errors; fix them first (see `callflow check`)");
        }
    };
    print_diagnostics(&warnings);
    let index = if by_file {
        let canonical = file.canonicalize().ok();
        set.flows
            .iter()
            .position(|f| f.file.canonicalize().ok() == canonical)
            .ok_or_else(|| anyhow!("{flow} defines no flow"))?
    } else {
        set.flow_index(flow)
            .map(|i| i as usize)
            .ok_or_else(|| anyhow!("no flow named `{flow}` in {}", flows.display()))?
    };
    Ok((Arc::new(set), index as u32))
}

fn parse_at(at: Option<&str>, tz: &str) -> Result<DateTime<Utc>> {
    let Some(text) = at else {
        #[allow(clippy::disallowed_methods)] // the CLI is the IO edge
        return Ok(Utc::now());
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let zone: chrono_tz::Tz = tz
        .parse()
        .map_err(|_| anyhow!("`{tz}` is not an IANA time zone name"))?;
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
        .with_context(|| format!("`{text}` is not a time; write 2026-11-25T10:00 or RFC 3339"))?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| anyhow!("{text} does not exist in {tz} (a daylight-saving gap)"))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            paths,
            prompts,
            strict,
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("flows")]
            } else {
                paths
            };
            let loaded = load_paths(
                &paths,
                &LoadOptions {
                    prompts_dir: prompts,
                },
            );
            print_diagnostics(&loaded.diagnostics);
            let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
            let warnings = loaded.diagnostics.len() - errors;
            if errors > 0 || (strict && warnings > 0) {
                eprintln!("{errors} error(s), {warnings} warning(s)");
                return Ok(ExitCode::from(1));
            }
            if let Some(set) = &loaded.set {
                let nodes: usize = set.flows.iter().map(|f| f.nodes.len()).sum();
                println!(
                    "ok: {} flow(s), {nodes} node(s), {} prompt(s), {warnings} warning(s)",
                    set.flows.len(),
                    set.prompt_names.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            flow,
            flows,
            prompts,
            caller,
            called,
            at,
            tz,
            input,
            transfer,
            callback,
            vars,
        } => {
            let (set, index) = load_for(&flow, &flows, &prompts)?;
            let input = simulate::parse_script(&input)?;
            let options = Simulation {
                caller,
                called,
                at: parse_at(at.as_deref(), &tz)?,
                input,
                transfer,
                callback,
                vars: vars
                    .iter()
                    .map(|v| {
                        v.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| anyhow!("--var `{v}`: write NAME=VALUE"))
                    })
                    .collect::<Result<_>>()?,
            };
            let durations = simulate::prompt_durations(&set);
            let entry = callflow::flow::NodeRef {
                flow: index,
                node: set.flow(index).start,
            };
            let transcript = simulate::simulate(set, entry, &durations, &options);
            print!("{}", transcript.text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            flow,
            flows,
            prompts,
            format,
            output,
        } => {
            let (set, index) = load_for(&flow, &flows, &prompts)?;
            let text = render::render(&set, index, format);
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(args),
        Command::Report {
            records,
            since,
            flow,
            format,
            flows,
            prompts,
            output,
        } => report(
            &records,
            since.as_deref(),
            flow,
            format,
            &flows,
            &prompts,
            output.as_deref(),
        ),
        Command::Callbacks { db, action } => callbacks(&db, action),
        Command::Schema => {
            print!("{}", callflow::flow::schema::schema_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}
