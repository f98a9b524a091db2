import click
@click.command("eval")
def eval_command() -> None:
    """(placeholder: issue 7)"""
