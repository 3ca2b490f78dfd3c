"""Views over the records for people: the HTML report and the live status page."""
