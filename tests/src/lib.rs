//! Harness for the end-to-end tests: spawns real servers and programs.
