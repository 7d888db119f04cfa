"""What the tests (`activity_pipeline_tests`) and the benchmarks (`bench`) share: demo-tenant servers and doubles,
the project's commands as a person runs them, and object-storage emulators on loopback. Nothing here is
imported by the package itself, and nothing here imports pytest: a test turns an emulator that is missing
into a skip, a benchmark into an error.
"""
