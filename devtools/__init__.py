"""Development tools: the MediaWiki stand-in and the media generators used by the tests,
the load tests and the benchmarks. Never imported by serving code."""
