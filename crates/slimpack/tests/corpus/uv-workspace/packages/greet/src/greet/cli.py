import click

@click.command()
def main():
    click.echo("hello from the greet member")
