# Installed by the Makefile into .venv/etc/ipython/, where every IPython kernel started from the
# book's virtual environment reads it (chapter execution in `make book`, nbval, `make bench`).
#
# ipykernel 7 logs "Kernel is running over TCP without encryption" at WARNING level each time a
# kernel starts. The build's kernels listen on loopback only and are stopped after their chapter,
# so the message is noise in every build log; errors are still logged. Output of the chapters'
# own code (including Python warnings) is not affected: it goes to the cells, not to this log.
c.IPKernelApp.log_level = "ERROR"  # noqa: F821 (c is defined by the config loader)
