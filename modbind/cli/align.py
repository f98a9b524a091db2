import click
@click.command()
def align() -> None:
    """(placeholder: issue 6)"""
