fn main() {
    let p = addrprobe::Prober::auto().unwrap();
    println!("{:?}", p.backend());
}
