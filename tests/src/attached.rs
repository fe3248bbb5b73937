//! A `qemu-sink` attached to a fake QEMU on a private bus: what most
//! end-to-end tests start from. The fake QEMU serves one console named
//! after the test; the sink is found by that name (`--vm`).

use std::path::PathBuf;
use std::time::Duration;

use sink::vm::PrivateBus;

use crate::fake_qemu::{FakeListener, FakeQemu};
use crate::sink_run::Sink;
use crate::{private_bus, sink_command, TempDir};

const UUID: &str = "00000000-0000-4000-8000-00000a77ac4e";

pub struct Attached {
    pub dir: TempDir,
    pub bus: PrivateBus,
    pub fake: FakeQemu,
    pub listener: FakeListener,
    pub sink: Sink,
    /// Where the sink writes its picture (`--out` or `--capture`).
    pub out: PathBuf,
    /// Its `--report` at exit.
    pub report: PathBuf,
}

impl Attached {
    /// `qemu-sink COMMAND --bus … --vm TAG ARGS… PICTURE_OPTION OUT
    /// --report REPORT`, with `env` set, attached to a fake QEMU whose
    /// console is `size`.
    pub fn start(
        tag: &str,
        size: (u32, u32),
        command: &str,
        args: &[&str],
        picture_option: &str,
        env: &[(&str, &str)],
    ) -> Attached {
        let dir = TempDir::new(tag);
        let bus = private_bus(&dir);
        let fake = FakeQemu::on_bus(&bus.address, tag, UUID, size).unwrap();
        let (out, report) = (dir.path("picture.png"), dir.path("report.json"));
        let mut all = vec![command, "--bus", &bus.address, "--vm", tag];
        all.extend_from_slice(args);
        all.extend_from_slice(&[picture_option, out.to_str().expect("utf-8 path")]);
        all.extend_from_slice(&["--report", report.to_str().expect("utf-8 path")]);
        let mut command_line = sink_command(&all);
        command_line.envs(env.iter().copied());
        let sink = Sink::spawn(command_line);
        let listener = match fake.accept_listener(Duration::from_secs(60)) {
            Ok(listener) => listener,
            Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
        };
        Attached {
            dir,
            bus,
            fake,
            listener,
            sink,
            out,
            report,
        }
    }

    /// `qemu-sink capture --out` attached to a `size` console.
    pub fn capture(tag: &str, size: (u32, u32)) -> Attached {
        Attached::start(tag, size, "capture", &[], "--out", &[])
    }

    /// `qemu-sink display --capture` on the `card` at the console's size.
    pub fn display(tag: &str, size: (u32, u32), card: &str, args: &[&str]) -> Attached {
        let mode = format!("{}x{}", size.0, size.1);
        let mut all = vec!["--device", card, "--mode", &mode];
        all.extend_from_slice(args);
        Attached::start(tag, size, "display", &all, "--capture", &[])
    }

    /// Runs a scenario; if it fails, says how the sink ended and what it
    /// logged.
    pub fn play(self, scenario: impl FnOnce(&Attached)) -> Attached {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&self))) {
            Ok(()) => self,
            Err(_) => panic!("the scenario failed; {}", self.sink.abort()),
        }
    }
}
