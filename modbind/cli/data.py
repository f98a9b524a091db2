import click
@click.group()
def data() -> None:
    """(placeholder: issue 9)"""
