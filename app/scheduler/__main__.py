"""`python -m app.scheduler`: run the scheduler in the foreground until SIGINT/SIGTERM."""

from app.scheduler.runner import main

main()
