"""The `quill` command line and the Prefect flows over the `pipeline` stage functions (no stage logic here).

    cli.py              the `quill` entry point (run, stage, serve, generate, config)
    corpus_to_model.py  the main flow (quill run)       stages.py   one flow per stage, for the UI
    tasks.py            thin task wrappers, step()      params.py   the parameter forms (pydantic)
    artifacts.py        reports, links, progress        serve.py    cron + stage deployments (quill serve)
    runners.py          --task-runner choices            launch.py   torchrun for multi-process training
"""
