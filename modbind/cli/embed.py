import click
@click.command()
def embed() -> None:
    """(placeholder: issue 7)"""
