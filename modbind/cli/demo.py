import click
@click.command()
def demo() -> None:
    """(placeholder: issue 8)"""
