//! `addrprobe report`: what every backend does on this machine.

pub fn run(_args: &[String]) -> i32 {
    let set = match addrprobe::fixtures::FixtureSet::build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("addrprobe report: cannot build the fixtures: {e}");
            return 1;
        }
    };
    let mut false_positives = 0;
    for backend in addrprobe::Backend::ALL {
        match addrprobe::Prober::new(backend) {
            Ok(p) => {
                for cell in addrprobe::fixtures::run_matrix(&set, &p) {
                    if cell.verdict == addrprobe::fixtures::Verdict::FalsePositive {
                        false_positives += 1;
                    }
                    println!("{backend} {} {}", cell.fixture, cell.verdict.mark());
                }
            }
            Err(e) => println!("{backend}: {e}"),
        }
    }
    i32::from(false_positives > 0)
}
