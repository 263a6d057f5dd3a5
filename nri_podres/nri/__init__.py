"""The NRI plugin side: event table, stub (dispatch) and asyncio transport."""
