//! The `qemu-sink` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use dbus_interfaces::ListenerOptions;
use sink::attach::{attach, list_vms_on_bus, AttachOptions, Control};
use sink::handover::{ConsoleWatch, SharedActivity, Watched};
use sink::input::guest::Target;
use sink::input::{InputOptions, InputThread};
use sink::output::display::{DisplayOptions, OutputThread, PathChoice};
use sink::output::gl_capture::GlCapture;
use sink::output::headless::{run_capture_with, CaptureOptions, CaptureSummary, Stopped};
use sink::output::kms::CardAccess;
use sink::output::kms::ModeSpec;
use sink::report::Report;
use sink::seat::{Seat, SeatChoice};
use sink::signals::StopTargets;
use sink::source::dbus::DbusSource;
use sink::source::vdmabuf::VdmabufSource;
use sink::state::Shared;
use sink::state::StopReason;

/// A host display sink for QEMU's `-display dbus`.
#[derive(Parser, Debug)]
#[command(name = "qemu-sink", version, about)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `debug` or `sink=trace`.
    #[arg(
        long,
        global = true,
        default_value = "info,zbus=error",
        env = "QEMU_SINK_LOG"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every QEMU on the bus (unique name, Name, UUID and consoles),
    /// libvirt's domains, and the monitors.
    List {
        /// D-Bus address of the bus (default: the session bus).
        #[arg(long)]
        bus: Option<String>,
        /// libvirt's connection URI (default: qemu:///system when its
        /// daemon runs, or LIBVIRT_DEFAULT_URI).
        #[arg(long)]
        connect: Option<String>,
    },
    /// Capture a console to PNG, rewritten each time the screen changes.
    Capture(CaptureArgs),
    /// Latency mode, headless: every DMA-BUF frame's stages timestamped
    /// (receive, import, composition, release), the stage table logged every
    /// --latency-interval seconds (default 1) and at exit. `capture --latency`
    /// without a PNG.
    Latency(CaptureArgs),
    /// Show a console on a monitor of its own through KMS: the guest's
    /// DMA-BUF on the plane where it can be (no copy), composed by GL
    /// otherwise. Needs DRM master: run it from a text VT or a seat with no
    /// compositor on that card.
    Display(DisplayArgs),
    /// Start a private dbus-daemon and a QEMU (SeaBIOS, no disk), capture its
    /// screen to PNG, and stop them again.
    Demo {
        /// The PNG (with --display: what the monitor showed, by writeback
        /// or readback).
        #[arg(long, default_value = "qemu-sink-demo.png")]
        out: PathBuf,
        /// How long to watch the VM (SeaBIOS reaches its last screen in about 3 s).
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Show the VM on a monitor (KMS) instead of capturing it headless.
        #[arg(long)]
        display: bool,
        /// With --display: the DRM card (default: the first with a
        /// connected connector).
        #[arg(long, requires = "display")]
        device: Option<PathBuf>,
    },
    /// Write the man pages (qemu-sink.1 and one per command, into --dir)
    /// or print a shell's completions, made from this command line
    /// (scripts/install.sh installs them).
    #[command(hide = true)]
    Generate {
        #[arg(value_parser = ["man", "bash", "zsh", "fish"])]
        what: String,
        /// Where the man pages go.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// `generate`: the man pages (roff) into `dir`, or a shell's completion
/// script on stdout.
fn generate(what: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let shell = match what {
        "man" => {
            return clap_mangen::generate_to(cli, dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()));
        }
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        _ => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cli, "qemu-sink", &mut std::io::stdout().lock());
    Ok(())
}

#[derive(Args, Debug, Clone)]
struct AttachArgs {
    /// D-Bus address of the bus QEMU is on (default: the session bus).
    #[arg(long, conflicts_with = "qmp")]
    bus: Option<String>,
    /// QMP socket of a QEMU started with `-display dbus,p2p=on` (no bus).
    #[arg(long)]
    qmp: Option<PathBuf>,
    /// Name or UUID of the VM, when several QEMUs share the bus.
    #[arg(long, conflicts_with = "qmp")]
    vm: Option<String>,
    /// A libvirt domain (name or UUID) with <graphics type='dbus'/>: its
    /// display is found through libvirt (its bus, or p2p='yes').
    #[arg(long, conflicts_with_all = ["bus", "qmp", "vm"])]
    domain: Option<String>,
    /// libvirt's connection URI for --domain (default: libvirt's own,
    /// qemu:///system for root).
    #[arg(long, requires = "domain")]
    connect: Option<String>,
    /// Console number (default 0; `display` without it follows the
    /// console in use: see the README's primary screen).
    #[arg(long)]
    console: Option<u32>,
    /// Don't offer shared memory (Listener.Unix.Map): QEMU then copies every
    /// update through the socket.
    #[arg(long)]
    no_map: bool,
    /// One p2p connection for all that attaches (not an option).
    #[arg(skip)]
    p2p_share: sink::attach::P2pShare,
}

impl AttachArgs {
    fn options(&self) -> AttachOptions {
        AttachOptions {
            bus: self.bus.clone(),
            qmp: self.qmp.clone(),
            vm: self.vm.clone(),
            domain: self.domain.clone(),
            connect: self.connect.clone(),
            console: self.console.unwrap_or(0),
            p2p_share: Some(self.p2p_share.clone()),
            listener: ListenerOptions {
                map: !self.no_map,
                ..ListenerOptions::default()
            },
        }
    }
}

#[derive(Args, Debug)]
struct CaptureArgs {
    #[command(flatten)]
    attach: AttachArgs,
    /// Where frames come from: `dbus` (QEMU's -display dbus, the default) or
    /// `vdmabuf[=NODE]` (export events; NODE defaults to /dev/vhost-vdmabuf).
    #[arg(long, default_value = "dbus", value_parser = parse_source)]
    source: Source,
    /// The PNG to write (replaced atomically on every change); required
    /// for `capture`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this many surface updates.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Stop once the screen has been still for this many seconds.
    #[arg(long)]
    settle: Option<f64>,
    /// Draw the guest's mouse cursor into the picture.
    #[arg(long)]
    cursor: bool,
    /// EGL device for DMA-BUF frames (gl=on): auto, software, surfaceless
    /// or a DRM node such as /dev/dri/renderD128.
    #[arg(long, default_value = "auto")]
    render_device: gl_renderer::RenderDevice,
    /// Compose DMA-BUF frames at this size (WxH), scaled with the aspect
    /// ratio kept; default: the guest's own size, 1:1.
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    #[command(flatten)]
    latency: LatencyArgs,
}

#[derive(Args, Debug, Clone)]
struct LatencyArgs {
    /// Log the per-stage latency table every --latency-interval seconds.
    #[arg(long)]
    latency: bool,
    /// How often --latency logs the stage table (seconds; default 1).
    #[arg(long)]
    latency_interval: Option<f64>,
    /// Write the frame counts, per-stage figures and every frame's
    /// timestamps to this JSON file at exit.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Draw the per-stage distributions and a per-frame timeline into this
    /// SVG file at exit.
    #[arg(long)]
    plot: Option<PathBuf>,
}

impl LatencyArgs {
    /// The table interval, if any (`--latency` alone: every second).
    fn interval(&self, latency_mode: bool) -> anyhow::Result<Option<Duration>> {
        match (self.latency_interval, self.latency || latency_mode) {
            (Some(s), _) => seconds(Some(s), "latency-interval"),
            (None, true) => Ok(Some(Duration::from_secs(1))),
            (None, false) => Ok(None),
        }
    }
}

#[derive(Args, Debug)]
struct DisplayArgs {
    #[command(flatten)]
    attach: AttachArgs,
    /// Where frames come from: `dbus` (the default) or `vdmabuf[=NODE]`.
    #[arg(long, default_value = "dbus", value_parser = parse_source)]
    source: Source,
    /// The DRM card: /dev/dri/cardN, or a kernel driver's name such as
    /// vkms (default: the first card with a connected connector).
    #[arg(long)]
    device: Option<PathBuf>,
    /// The connector, e.g. HDMI-A-1 or Virtual-1 (default: the first connected).
    #[arg(long)]
    connector: Option<String>,
    /// Show console CONSOLE on CONNECTOR (of CARD, a path or a driver's
    /// name; default: --device). Repeat for several heads, each on a monitor
    /// of its own; replaces --console and --connector.
    #[arg(long = "head", value_name = "CONSOLE=[CARD:]CONNECTOR", value_parser = parse_head,
          conflicts_with = "connector")]
    heads: Vec<HeadSpec>,
    /// `auto`: the VM's graphic consoles in order, each on the next
    /// connected monitor (one per card), as `list` shows them.
    #[arg(long = "heads", value_name = "auto", value_parser = ["auto"],
          conflicts_with_all = ["heads", "connector", "device"])]
    auto_heads: Option<String>,
    /// The mode, WxH or WxH@Hz (default: the connector's preferred mode).
    #[arg(long)]
    mode: Option<ModeSpec>,
    /// auto: the guest's buffer on the plane when the plane takes it, else
    /// composed by GL; direct: never compose (frames the plane refuses are
    /// dropped); composite: always compose.
    #[arg(long, default_value = "auto")]
    path: PathChoice,
    /// Write what the monitor shows to this PNG after each change (by
    /// writeback where the card has it, else read back through GL).
    #[arg(long)]
    capture: Option<PathBuf>,
    /// EGL device for composition: auto, software, surfaceless or a DRM node.
    #[arg(long, default_value = "auto")]
    render_device: gl_renderer::RenderDevice,
    /// Stop after this many updates were received and shown.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Draw the guest's cursor with GL instead of putting it on the cursor
    /// plane (for drivers whose cursor plane misbehaves).
    #[arg(long)]
    no_cursor_plane: bool,
    /// Do not tell the guest the monitor's size. By default the console is
    /// told the mode and the panel's size (QEMU's SetUIInfo) whenever the
    /// monitor is lit, so that a guest that follows it (virtio-gpu) takes
    /// the monitor's native mode and its buffers can be scanned out as
    /// they are.
    #[arg(long)]
    no_resize: bool,
    /// Don't forward the keyboards, mice, touchpads and touchscreens to
    /// the guest (by default they are, grabbed: Ctrl+Alt+G gives them back).
    #[arg(long)]
    no_input: bool,
    /// Forward only this evdev device (/dev/input/eventN or a link to one;
    /// repeatable). Default: every keyboard, mouse, touchpad and
    /// touchscreen, also those plugged in later.
    #[arg(long, value_name = "PATH", conflicts_with = "no_input")]
    input_device: Vec<PathBuf>,
    /// Open the card and the input devices through the seat (libseat:
    /// seatd or a logind session), so that an ordinary user can run the
    /// display and VT switches hand the devices over: `auto` (a seat when
    /// seatd's socket is there or in a logind session, else the devices
    /// opened directly), `none`, or a seat's name (that seat, or fail).
    #[arg(long, value_name = "auto|none|NAME", default_value = "auto")]
    seat: SeatChoice,
    #[command(flatten)]
    latency: LatencyArgs,
}

#[derive(Debug, Clone)]
enum Source {
    Dbus,
    Vdmabuf(PathBuf),
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::Dbus => "dbus",
            Source::Vdmabuf(_) => "vdmabuf",
        }
    }
}

/// `--report` and `--plot`.
fn write_reports(report: &Report<'_>, args: &LatencyArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.report {
        report.write_json(path)?;
    }
    if let Some(path) = &args.plot {
        report.write_svg(path)?;
    }
    Ok(())
}

fn parse_source(s: &str) -> Result<Source, String> {
    match s.split_once('=') {
        None if s == "dbus" => Ok(Source::Dbus),
        None if s == "vdmabuf" => Ok(Source::Vdmabuf(PathBuf::from(
            sink::source::vdmabuf::DEFAULT_NODE,
        ))),
        Some(("vdmabuf", path)) if !path.is_empty() => Ok(Source::Vdmabuf(PathBuf::from(path))),
        _ => Err(format!("{s:?}: expected dbus, vdmabuf or vdmabuf=PATH")),
    }
}

/// One console on one monitor (`--head`).
#[derive(Debug, Clone, PartialEq)]
struct HeadSpec {
    console: u32,
    card: Option<PathBuf>,
    connector: Option<String>,
    /// The head may move to the console in use (a single head whose
    /// console was not given).
    follows: bool,
}

fn parse_head(s: &str) -> Result<HeadSpec, String> {
    let expected = || format!("{s:?}: expected CONSOLE=[CARD:]CONNECTOR, e.g. 1=HDMI-A-2");
    let (console, output) = s.split_once('=').ok_or_else(expected)?;
    let console = console.parse::<u32>().map_err(|_| expected())?;
    let (card, connector) = match output.rsplit_once(':') {
        Some((card, connector)) => (Some(PathBuf::from(card)), connector),
        None => (None, output),
    };
    if connector.is_empty() || card.as_ref().is_some_and(|c| c.as_os_str().is_empty()) {
        return Err(expected());
    }
    Ok(HeadSpec {
        console,
        card,
        connector: Some(connector.to_owned()),
        follows: false,
    })
}

/// `path` for head `console` when there are several: `screen.png` →
/// `screen-1.png`.
fn per_head(path: &std::path::Path, console: u32) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{console}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{console}"),
    };
    path.with_file_name(name)
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected WxH"))?;
    let parse = |v: &str| v.parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
    let (w, h) = (parse(w)?, parse(h)?);
    dbus_interfaces::validate::check_size(w, h).map_err(|e| e.to_string())?;
    Ok((w, h))
}

fn seconds(value: Option<f64>, what: &str) -> anyhow::Result<Option<Duration>> {
    value
        .map(|s| Duration::try_from_secs_f64(s).with_context(|| format!("--{what} {s}")))
        .transpose()
}

fn report_capture(summary: &CaptureSummary, out: &std::path::Path) -> anyhow::Result<()> {
    let Some((w, h)) = summary.size else {
        bail!("no frame received from QEMU ({:?})", summary.stopped_by);
    };
    let why = match summary.stopped_by {
        Stopped::Frames => "frame count reached".to_owned(),
        Stopped::Timeout => "timeout".to_owned(),
        Stopped::Settled => "screen settled".to_owned(),
        Stopped::Signal(sig) => format!("signal {sig}"),
        Stopped::Disconnected => "QEMU disconnected".to_owned(),
    };
    tracing::info!(
        "wrote {} ({w}x{h}) {} times; {} updates, {} dropped; stopped: {why}",
        out.display(),
        summary.pngs_written,
        summary.updates,
        summary.rejected
    );
    Ok(())
}

/// A running frame source: the D-Bus listener or the vdmabuf reader.
struct Running {
    attached: Option<sink::attach::Attached>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn start_source(
    source: &Source,
    attach_args: &AttachArgs,
    shared: &Arc<Shared>,
) -> anyhow::Result<Running> {
    start_watched_source(source, attach_args, shared, None)
}

/// [`start_source`], its console's updates noted in `activity` (for the
/// head to follow the console in use).
fn start_watched_source(
    source: &Source,
    attach_args: &AttachArgs,
    shared: &Arc<Shared>,
    activity: Option<&SharedActivity>,
) -> anyhow::Result<Running> {
    Ok(match source {
        Source::Dbus => {
            let options = attach_args.options();
            let handler: Box<dyn dbus_interfaces::ListenerHandler> =
                Box::new(DbusSource::new(shared.clone()));
            let handler = match activity {
                Some(activity) => {
                    activity
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .showing(options.console, std::time::Instant::now());
                    Box::new(Watched::shown(options.console, handler, activity.clone()))
                }
                None => handler,
            };
            Running {
                attached: Some(attach(&options, handler, shared)?),
                reader: None,
            }
        }
        Source::Vdmabuf(node) => Running {
            attached: None,
            reader: Some(VdmabufSource::open(node)?.spawn(shared.clone())),
        },
    })
}

impl Running {
    /// Stops the source, then lets go of whatever it still queued: every
    /// vdmabuf id is released, also the ones never shown.
    fn stop(self, shared: &Shared) {
        shared.stop(StopReason::Finished);
        if let Some(reader) = self.reader {
            let _ = reader.join();
        }
        shared.lock().dmabuf.clear();
    }
}

/// `capture` and `latency`: the headless output.
fn run_headless(
    shared: &Arc<Shared>,
    args: &CaptureArgs,
    latency_mode: bool,
) -> anyhow::Result<()> {
    if args.out.is_none() && !latency_mode {
        bail!("capture needs --out FILE.png (or use `qemu-sink latency`)");
    }
    let options = CaptureOptions {
        out: args.out.clone(),
        frames: args.frames,
        timeout: seconds(args.timeout, "timeout")?,
        settle: seconds(args.settle, "settle")?,
        cursor: args.cursor,
        render_device: args.render_device.clone(),
        size: args.size,
        latency_interval: args.latency.interval(latency_mode)?,
    };
    let mut gl = GlCapture::new(options.render_device.clone(), options.size);
    gl.warm_up();
    let running = start_source(&args.source, &args.attach, shared)?;
    let summary = run_capture_with(shared, &options, &mut gl)?;
    running.stop(shared);
    let report = Report {
        mode: if latency_mode { "latency" } else { "capture" },
        source: args.source.name(),
        refresh: None,
        stats: &gl.log.stats,
        records: gl.log.records.make_contiguous(),
        input_to_call: None,
    };
    write_reports(&report, &args.latency)?;
    match &options.out {
        Some(out) => report_capture(&summary, out),
        None => Ok(()),
    }
}

/// `display` for one head: its console on its monitor, attached again
/// whenever QEMU comes back, until a signal (or `--frames`/`--timeout`).
/// With `several` heads, files named on the command line get the console's
/// number (`screen-1.png`).
fn run_head(
    head: &HeadSpec,
    args: &DisplayArgs,
    shared: Arc<Shared>,
    heads: usize,
    input: Option<(&InputThread, usize)>,
    access: &CardAccess,
) -> anyhow::Result<()> {
    let several = heads > 1;
    let in_file = |path: &Option<PathBuf>| {
        path.as_ref().map(|p| {
            if several {
                per_head(p, head.console)
            } else {
                p.clone()
            }
        })
    };
    let options = DisplayOptions {
        device: head.card.clone().or_else(|| args.device.clone()),
        connector: head.connector.clone(),
        mode: args.mode,
        path: args.path,
        capture: in_file(&args.capture),
        render_device: args.render_device.clone(),
        frames: args.frames,
        timeout: seconds(args.timeout, "timeout")?,
        latency_interval: args.latency.interval(false)?,
        no_cursor_plane: args.no_cursor_plane,
        no_resize: args.no_resize,
        access: access.clone(),
    };
    let mut attach = AttachArgs {
        console: Some(head.console),
        ..args.attach.clone()
    };
    let mut console = head.console;
    let activity = head.follows.then(SharedActivity::default);
    // Light the monitor (and warm up GL) before QEMU waits on us.
    let display = OutputThread::start(options, shared.clone())?;
    sink::notify::head_lit(
        heads,
        &format!("showing console {} (waiting for QEMU)", head.console),
    );
    let mut attached_once = false;
    let stopped = loop {
        let running = match start_watched_source(&args.source, &attach, &shared, activity.as_ref())
        {
            Ok(running) => running,
            // QEMU went away: wait for it (or a signal) on a black screen.
            Err(err) if attached_once => {
                tracing::debug!("re-attaching: {err:#}");
                match shared.lock().stop {
                    Some(StopReason::Signal(sig)) => break Stopped::Signal(sig),
                    Some(_) => break Stopped::Disconnected,
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(err) => return Err(err),
        };
        if attached_once {
            tracing::info!("QEMU is back: attached again");
        }
        attached_once = true;
        if let (Some((input, screen)), Some(attached)) = (input, &running.attached) {
            input.attach(
                screen,
                Target {
                    connection: attached.control.connection.clone(),
                    destination: attached.control.peer.clone(),
                    console,
                },
                shared.clone(),
            );
        }
        // The VM's other graphic consoles, watched for the head to follow.
        let watch = match (&activity, &running.attached) {
            (Some(activity), Some(attached)) => Some(ConsoleWatch::start(
                &attached.control,
                console,
                &attach.options(),
                activity.clone(),
                shared.clone(),
            )),
            _ => None,
        };
        let stopped = display.run()?;
        let moved = watch.as_ref().and_then(ConsoleWatch::chosen);
        drop(watch);
        if let Some((input, screen)) = input {
            input.detach(screen);
        }
        running.stop(&shared);
        if stopped != Stopped::Disconnected || !matches!(args.source, Source::Dbus) {
            break stopped;
        }
        if !shared.forget_source() {
            break stopped;
        }
        match moved {
            Some(next) => {
                tracing::info!(
                    "console {console} is idle and console {next} is in use: showing console {next}"
                );
                console = next;
                attach.console = Some(next);
            }
            None => tracing::info!("QEMU went away: the monitor stays black until it is back"),
        }
        display.blank()?;
    };
    // (The input thread, shared by the heads, is the first head's to
    // report on.)
    let input_to_call = input
        .filter(|(_, screen)| *screen == 0)
        .and_then(|(input, _)| input.latency());
    let mut summary = display.finish(stopped)?;
    let name = if several {
        format!("head {}: ", head.console)
    } else {
        String::new()
    };
    tracing::info!("{name}{}", summary.line());
    tracing::info!("{name}frame stages:\n{}", summary.stats.table());
    if let Some(f) = input_to_call {
        tracing::info!(
            "{name}input event → D-Bus call: {} events, median {} µs, p99 {} µs, max {} µs",
            f.count,
            f.median,
            f.p99,
            f.max
        );
    }
    let report = Report {
        mode: "display",
        source: args.source.name(),
        refresh: Some(summary.refresh),
        stats: &summary.stats,
        records: summary.records.make_contiguous(),
        input_to_call,
    };
    let files = LatencyArgs {
        report: in_file(&args.latency.report),
        plot: in_file(&args.latency.plot),
        ..args.latency.clone()
    };
    write_reports(&report, &files)
}

/// libvirt's domains for `list`: at `uri`, else at libvirt's default URI
/// when `LIBVIRT_DEFAULT_URI` says it, else at qemu:///system when its
/// daemon runs (never a session daemon started just to list).
fn list_domains(uri: Option<&str>) -> anyhow::Result<Vec<sink::libvirt::DomainInfo>> {
    let asked = uri.is_some();
    let uri = match uri {
        Some(uri) => Some(uri),
        None if std::env::var_os("LIBVIRT_DEFAULT_URI").is_some() => None,
        None if std::path::Path::new("/run/libvirt/libvirt-sock").exists() => {
            Some("qemu:///system")
        }
        None => return Ok(Vec::new()),
    };
    match sink::libvirt::Libvirt::connect(uri).and_then(|l| l.domains()) {
        Ok(domains) => Ok(domains),
        Err(err) if !asked => {
            eprintln!("(no libvirt domains listed: {err})");
            Ok(Vec::new())
        }
        Err(err) => Err(err.into()),
    }
}

/// `--heads auto`: the VM's graphic consoles in order, each on the next
/// connected monitor (card by card, connector by connector); what is left
/// over on either side is said.
fn auto_heads(attach: &AttachArgs) -> anyhow::Result<Vec<HeadSpec>> {
    let vm = Control::connect(&attach.options())?.describe()?;
    let consoles: Vec<_> = vm.consoles.iter().filter(|c| c.kind == "Graphic").collect();
    let monitors = sink::output::kms::connected_outputs()?;
    let heads: Vec<HeadSpec> = consoles
        .iter()
        .zip(&monitors)
        .map(|(console, monitor)| {
            tracing::info!(
                "heads auto: console {} ({:?}) on {}:{} ({})",
                console.id,
                console.label,
                monitor.card.display(),
                monitor.connector,
                monitor.driver
            );
            HeadSpec {
                console: console.id,
                card: Some(monitor.card.clone()),
                connector: Some(monitor.connector.clone()),
                follows: false,
            }
        })
        .collect();
    for console in consoles.iter().skip(heads.len()) {
        tracing::warn!("heads auto: no monitor left for console {}", console.id);
    }
    if heads.is_empty() {
        bail!(
            "heads auto: {} graphic consoles, {} connected monitors",
            consoles.len(),
            monitors.len()
        );
    }
    Ok(heads)
}

/// The input thread of `display`: none with vdmabuf (no QEMU to send
/// to) or `--no-input`. One for all the heads: each is a screen of it.
fn start_input(args: &DisplayArgs, access: &CardAccess) -> anyhow::Result<Option<InputThread>> {
    if args.no_input || !matches!(args.source, Source::Dbus) {
        return Ok(None);
    }
    let options = InputOptions {
        devices: args.input_device.clone(),
        seat: match access {
            CardAccess::Seat(seat) => Some(seat.clone()),
            CardAccess::Direct => None,
        },
    };
    Ok(Some(InputThread::start(options).context("starting input")?))
}

/// `display` with several heads: one thread per head (each with its
/// console's `Shared`, its output thread and its attachment), so that one
/// head's trouble never stalls another. A head that fails stops the others.
fn run_heads(
    heads: &[HeadSpec],
    args: &DisplayArgs,
    shared: &Arc<Shared>,
    targets: &StopTargets,
    access: &CardAccess,
) -> anyhow::Result<()> {
    if !matches!(args.source, Source::Dbus) {
        bail!("several heads need --source dbus (a vdmabuf node has one stream)");
    }
    for (i, a) in heads.iter().enumerate() {
        for b in &heads[i + 1..] {
            if a.console == b.console {
                bail!("console {} is given two heads", a.console);
            }
            // Heads on one card share it (one open file, flip events
            // shared out by CRTC), but not a connector.
            let card = |h: &HeadSpec| h.card.clone().or_else(|| args.device.clone());
            if card(a) == card(b) && a.connector == b.connector {
                bail!(
                    "heads {} and {} are both given {} on {}",
                    a.console,
                    b.console,
                    a.connector
                        .as_deref()
                        .unwrap_or("the first connected connector"),
                    card(a).map_or("the default card".into(), |c| c.display().to_string())
                );
            }
        }
    }
    let input = start_input(args, access)?;
    let (done, finished) = std::sync::mpsc::channel();
    // The monitors side by side in the guest's desktop, in head order
    // (and for the pointer, which crosses from one to the next).
    let layout = sink::state::HeadLayout::new(heads.len());
    std::thread::scope(|scope| {
        for (i, head) in heads.iter().enumerate() {
            let shared = if i == 0 {
                shared.clone()
            } else {
                let shared = Arc::new(Shared::default());
                targets.add(shared.clone());
                shared
            };
            shared.join_layout(layout.clone(), i);
            let done = done.clone();
            let input = input.as_ref();
            std::thread::Builder::new()
                .name(format!("head-{}", head.console))
                .spawn_scoped(scope, move || {
                    // Every line of this head (and of its output thread)
                    // says which head it is.
                    let _head = tracing::info_span!("head", console = head.console).entered();
                    let _ = done.send((
                        head.console,
                        run_head(
                            head,
                            args,
                            shared,
                            heads.len(),
                            input.map(|input| (input, i)),
                            access,
                        ),
                    ));
                })
                .expect("spawning a thread");
        }
        drop(done);
        let mut first_error = None;
        for (console, result) in finished {
            if let Err(err) = result {
                tracing::error!("head {console}: {err:#}");
                if first_error.is_none() {
                    tracing::info!("stopping the other heads");
                    targets.stop_all(libc::SIGTERM);
                    first_error = Some(err.context(format!("head {console}")));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    sink::signals::block_stop_signals().context("blocking SIGINT/SIGTERM")?;
    let shared = Arc::new(Shared::default());
    let targets = Arc::new(StopTargets::default());
    targets.add(shared.clone());
    sink::signals::forward_stop_signals(targets.clone());
    match cli.command {
        Command::List { bus, connect } => {
            let explicit_bus = bus.is_some();
            let control = Control::connect(&AttachOptions {
                bus,
                ..AttachOptions::default()
            });
            let vms = match control {
                Ok(control) => list_vms_on_bus(&control.connection)?,
                Err(sink::attach::AttachError::NoVm) => Vec::new(),
                // No session bus (root on a server): libvirt's domains and
                // the monitors are still worth listing.
                Err(err) if !explicit_bus => {
                    eprintln!("(no QEMU listed from the session bus: {err})");
                    Vec::new()
                }
                Err(err) => return Err(err.into()),
            };
            let domains = list_domains(connect.as_deref())?;
            // The other source: a vdmabuf consumer node, if the kernel has one.
            let vdmabuf = std::path::Path::new(sink::source::vdmabuf::DEFAULT_NODE);
            if vdmabuf.exists() {
                println!(
                    "vdmabuf\t{}\t(export events: --source vdmabuf)",
                    vdmabuf.display()
                );
            }
            if vms.is_empty() && domains.is_empty() && !vdmabuf.exists() {
                bail!(
                    "no QEMU with -display dbus on the bus, no libvirt domain, and no vdmabuf node"
                );
            }
            for domain in &domains {
                println!(
                    "domain\t{}\tuuid={}\tstate={}\tdisplay={}",
                    domain.name,
                    domain.uuid,
                    if domain.active { "running" } else { "off" },
                    domain.display
                );
            }
            for vm in vms {
                println!(
                    "{}\tname={:?}\tuuid={}",
                    vm.unique_name.as_deref().unwrap_or("-"),
                    vm.name,
                    vm.uuid
                );
                for c in vm.consoles {
                    println!(
                        "  console {}\tlabel={:?}\ttype={}\tsize={}x{}",
                        c.id, c.label, c.kind, c.width, c.height
                    );
                }
            }
            // The other side: the monitors `display` can drive.
            for monitor in sink::output::kms::connected_outputs().unwrap_or_default() {
                let mode = monitor
                    .preferred
                    .map_or("-".into(), |(w, h)| format!("{w}x{h}"));
                println!(
                    "monitor\t{}:{}\tdriver={}\tpreferred={mode}",
                    monitor.card.display(),
                    monitor.connector,
                    monitor.driver
                );
            }
            Ok(())
        }
        Command::Capture(args) => run_headless(&shared, &args, false),
        Command::Latency(args) => run_headless(&shared, &args, true),
        Command::Display(args) => {
            let heads = if args.auto_heads.is_some() {
                auto_heads(&args.attach)?
            } else if args.heads.is_empty() {
                vec![HeadSpec {
                    console: args.attach.console.unwrap_or(0),
                    card: None,
                    connector: args.connector.clone(),
                    follows: args.attach.console.is_none() && matches!(args.source, Source::Dbus),
                }]
            } else {
                args.heads.clone()
            };
            let access = match open_seat(&args.seat)? {
                Some(seat) => CardAccess::Seat(seat),
                None => CardAccess::Direct,
            };
            let result = match heads.as_slice() {
                [head] => {
                    let input = start_input(&args, &access)?;
                    run_head(
                        head,
                        &args,
                        shared,
                        1,
                        input.as_ref().map(|input| (input, 0)),
                        &access,
                    )
                }
                _ => run_heads(&heads, &args, &shared, &targets, &access),
            };
            sink::notify::notify("STOPPING=1");
            result
        }
        Command::Generate { what, dir } => generate(&what, &dir),
        Command::Demo {
            out,
            seconds: secs,
            display,
            device,
        } => {
            let duration = seconds(Some(secs), "seconds")?.unwrap_or_default();
            if display {
                let display = OutputThread::start(
                    DisplayOptions {
                        device,
                        capture: Some(out.clone()),
                        timeout: Some(duration),
                        ..DisplayOptions::default()
                    },
                    shared.clone(),
                )?;
                let summary = sink::demo::run_display_demo(shared, display)?;
                tracing::info!("{}", summary.line());
            } else {
                let summary = sink::demo::run_demo(shared, out.clone(), duration)?;
                report_capture(&summary, &out)?;
            }
            println!("{}", out.display());
            Ok(())
        }
    }
}

/// The seat `--seat` asks for, if any.
fn open_seat(choice: &SeatChoice) -> anyhow::Result<Option<Seat>> {
    match choice {
        SeatChoice::None => Ok(None),
        SeatChoice::Auto if std::env::var_os("LIBSEAT_BACKEND").is_none() => {
            // `main` chose no backend: no seat manager is here for us.
            tracing::debug!(
                "seat: none here (no seatd socket, no logind session): devices opened directly"
            );
            Ok(None)
        }
        SeatChoice::Auto => match Seat::open(None) {
            Ok(seat) => Ok(Some(seat)),
            Err(err) => {
                tracing::warn!("seat: {err}; opening the devices directly");
                Ok(None)
            }
        },
        SeatChoice::Named(name) => Ok(Some(Seat::open(Some(name))?)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sink::memory::opt_out_of_huge_pages();
    if let Command::Display(args) = &cli.command {
        // libseat reads its backend from the environment: chosen here,
        // before any thread runs, so that `--seat auto` uses seatd or
        // logind and never libseat's own seat server (which, as root,
        // takes over the VT it finds in front).
        if args.seat == SeatChoice::Auto && std::env::var_os("LIBSEAT_BACKEND").is_none() {
            if let Some(backend) = sink::seat::auto_backend() {
                std::env::set_var("LIBSEAT_BACKEND", backend);
            }
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd, stderr goes to the journal, which stamps each line.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("qemu-sink: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_name_a_console_and_a_connector_on_an_optional_card() {
        assert_eq!(
            parse_head("1=HDMI-A-2"),
            Ok(HeadSpec {
                console: 1,
                card: None,
                connector: Some("HDMI-A-2".into()),
                follows: false,
            })
        );
        assert_eq!(
            parse_head("0=/dev/dri/card1:DP-3"),
            Ok(HeadSpec {
                console: 0,
                card: Some("/dev/dri/card1".into()),
                connector: Some("DP-3".into()),
                follows: false,
            })
        );
        assert_eq!(
            parse_head("2=vkms:Virtual-1").unwrap().card,
            Some("vkms".into())
        );
        for bad in ["", "1", "x=HDMI-A-1", "1=", "1=card:", "1=:DP-1", "-1=DP-1"] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_head_writes_files_of_its_own() {
        let p = |s: &str| per_head(std::path::Path::new(s), 1);
        assert_eq!(p("/tmp/screen.png"), PathBuf::from("/tmp/screen-1.png"));
        assert_eq!(p("report.json"), PathBuf::from("report-1.json"));
        assert_eq!(p("/tmp/out"), PathBuf::from("/tmp/out-1"));
    }
}
