//! `proptest` properties of waitress's parser, receiver, buffers and HTTP dates: inputs too
//! open-ended for the unit tests next to the code. The library is empty; each module is a
//! group of tests over waitress's public modules.
#[cfg(test)]
mod buffers;
#[cfg(test)]
mod connection;
#[cfg(test)]
mod parser;
#[cfg(test)]
mod receiver;
#[cfg(test)]
mod utilities;
