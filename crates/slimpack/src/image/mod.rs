//! Where images live: sources an image is read from and sinks it is
//! written to.
